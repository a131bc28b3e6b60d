"""Accelerator type names (``rtml.util.accelerators``, as ``ray.util.accelerators``).

Pass one as ``accelerator_type=`` in ``@rtml.remote`` or ``.options()``: the task or actor then
needs a little of the custom resource ``"accelerator_type:<NAME>"`` and runs only on a node
that offers it, as in Ray. A node offers it when started with it, e.g.
``rtml.init(num_gpus=1, resources={"accelerator_type:V100": 1})`` or
``rtml start --resources '{"accelerator_type:V100": 1}'``.
"""

NVIDIA_TESLA_V100 = "V100"
NVIDIA_TESLA_P100 = "P100"
NVIDIA_TESLA_T4 = "T4"
NVIDIA_TESLA_P4 = "P4"
NVIDIA_TESLA_K80 = "K80"
NVIDIA_TESLA_A10G = "A10G"
NVIDIA_L4 = "L4"
NVIDIA_L40S = "L40S"
NVIDIA_A100 = "A100"
NVIDIA_A100_40G = "A100-40G"
NVIDIA_A100_80G = "A100-80G"
NVIDIA_H100 = "H100"
NVIDIA_H200 = "H200"
INTEL_MAX_1550 = "Intel-GPU-Max-1550"
INTEL_MAX_1100 = "Intel-GPU-Max-1100"
INTEL_GAUDI = "Intel-GAUDI"
AMD_INSTINCT_MI100 = "AMD-Instinct-MI100"
AMD_INSTINCT_MI250X = "AMD-Instinct-MI250X"
AMD_INSTINCT_MI300X = "AMD-Instinct-MI300X-OAM"
AWS_NEURON_CORE = "aws-neuron-core"
GOOGLE_TPU_V2 = "TPU-V2"
GOOGLE_TPU_V3 = "TPU-V3"
GOOGLE_TPU_V4 = "TPU-V4"
GOOGLE_TPU_V5P = "TPU-V5P"
GOOGLE_TPU_V5LITEPOD = "TPU-V5LITEPOD"
GOOGLE_TPU_V6E = "TPU-V6E"

__all__ = [
    "AMD_INSTINCT_MI100",
    "AMD_INSTINCT_MI250X",
    "AMD_INSTINCT_MI300X",
    "AWS_NEURON_CORE",
    "GOOGLE_TPU_V2",
    "GOOGLE_TPU_V3",
    "GOOGLE_TPU_V4",
    "GOOGLE_TPU_V5LITEPOD",
    "GOOGLE_TPU_V5P",
    "GOOGLE_TPU_V6E",
    "INTEL_GAUDI",
    "INTEL_MAX_1100",
    "INTEL_MAX_1550",
    "NVIDIA_A100",
    "NVIDIA_A100_40G",
    "NVIDIA_A100_80G",
    "NVIDIA_H100",
    "NVIDIA_H200",
    "NVIDIA_L4",
    "NVIDIA_L40S",
    "NVIDIA_TESLA_A10G",
    "NVIDIA_TESLA_K80",
    "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_V100",
]
