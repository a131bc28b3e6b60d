"""A Ray Serve program holding an rtml.online Subscriber (run by test_online_serve.py under Ray)."""

import tempfile
import time

import httpx
import ray
from ray import serve
from river import datasets, linear_model, metrics
from starlette.requests import Request

from rtml.online import ModelRegistry, OnlineState


@serve.deployment
class CTR:
    def __init__(self, registry):
        self.model = registry.subscriber(interval=0.02)

    def predict(self, x):
        return self.model.predict(x)

    async def __call__(self, request: Request):
        return self.model.response(await request.json())


data = list(datasets.Phishing())
registry = ModelRegistry(tempfile.mkdtemp(), name="phishing")
st = OnlineState(linear_model.LogisticRegression(), [metrics.Accuracy()], window=0)
registry.publish(st)
ray.init(num_cpus=2, include_dashboard=False)
handle = serve.run(CTR.bind(registry), name="ctr", route_prefix="/ctr")
r = httpx.post("http://127.0.0.1:8000/ctr", json=data[0][0])
print(r.status_code, r.headers["x-model-version"], r.json()["version"])
for x, y in data[:100]:
    st.learn(x, y)
registry.publish(st)
while int(httpx.post("http://127.0.0.1:8000/ctr", json=data[0][0]).headers["x-model-version"]) != 2:
    time.sleep(0.05)
print(handle.predict.remote(data[0][0]).result(timeout_s=30)["version"])
serve.shutdown()
ray.shutdown()
