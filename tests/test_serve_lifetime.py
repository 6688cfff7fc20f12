"""An app that is gone keeps none of its models: segedge's endpoints are module-level functions that find the service on
``request.app.state``, so FastAPI's process-wide caches of endpoint functions (``lru_cache``s of 4096 entries in
``fastapi.dependencies.models``) hold nothing of an app. Before, every endpoint was a closure over its app's service,
and a process that made apps one after another (a notebook, a test run) kept every one's compiled models."""

from __future__ import annotations

import gc
import weakref

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


def _fastapi_cached_endpoints() -> int:
    """How many callables FastAPI's classification caches hold now."""
    from fastapi.dependencies import models

    names = ("_is_gen_callable_cached", "_is_async_gen_callable_cached", "_is_coroutine_callable_cached")
    return sum(
        getattr(models, n).cache_info().currsize for n in names if hasattr(getattr(models, n, None), "cache_info")
    )


def test_apps_that_are_gone_keep_no_service(real_folder_640, shared_images):
    from segedge.serve.app import create_app
    from segedge.serve.label_studio import LabelStudioAccess
    from segedge.serve.label_studio import create_app as label_studio_app
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    services = [SegmentService.from_folders([real_folder_640], backend="openvino", precision="f32") for _ in range(2)]
    gone = [weakref.ref(s) for s in services]
    answers = []
    with (
        start_in_thread(create_app(services[0])) as page,
        start_in_thread(label_studio_app(services[1], LabelStudioAccess())) as backend,
    ):
        with httpx.Client(base_url=page.url, timeout=120) as client:
            answers.append(client.get("/").status_code)
            answers.append(client.get("/api/health").status_code)
            image_id = client.post("/api/images", content=shared_images[0].read_bytes()).json()["image_id"]
            found = client.post("/api/everything", json={"image_id": image_id}).json()
            refused = client.get("/api/videos/none")  # a video route: no such clip
            answers.append(refused.status_code)
        with httpx.Client(base_url=backend.url, timeout=120) as client:
            answers.append(client.get("/health").status_code)
            answers.append(client.post("/predict", content=b"[]").status_code)
    assert answers == [200, 200, 400, 200, 400], answers
    assert "video" in refused.json()["error"], refused.text
    assert found["count"] >= 1 and len(found["instances"]) == found["count"]  # the model ran
    assert _fastapi_cached_endpoints() >= 5  # FastAPI classified the endpoints (what kept the closures alive)
    del services, page, backend
    gc.collect()
    assert [ref() is None for ref in gone] == [True, True]
