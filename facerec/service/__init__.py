"""The HTTP service (`facerec serve`): one gallery for many kiosks and apps, over FastAPI + uvicorn.

Native routes under /v1 (identify, verify, compare, detect, subjects, calibration, audit), drop-in routes in
the shapes of CompreFace (/api/v1/recognition/...) and DeepStack / CodeProject.AI (/v1/vision/face/...),
all over one `FaceRec` engine per worker process. Needs the `service` extra (fastapi, uvicorn).
"""
