"""Challenge submission: the AI4Life-MDC24 container's entrypoint and the tools that build, test and save it.

- `submission.inference`: the entrypoint (runs inside the image; needs only torch, numpy, tifffile, tqdm).
- `submission.package`: a checkpoint or MLflow model -> model folder with a manifest (`w2s package`).
- `submission.containers`: docker when a daemon answers, else podman/buildah (daemon-less machines).
- `submission.build`, `submission.docker_test`, `submission.save`: `make docker-build|docker-test|docker-save`.
"""
