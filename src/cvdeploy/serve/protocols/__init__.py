"""The wire protocols the server speaks: Open Inference Protocol v2, the image API, SageMaker and Vertex AI.

Each module holds an ``APIRouter`` whose handlers are thin: parse and check the request, call
the repository's versions and batchers, encode the answer. They share the helpers in
:mod:`cvdeploy.serve.protocols.common`.
"""
