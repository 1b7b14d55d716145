# The sandbox image of the Docker runtime (sandbox/runtime/docker.py): the trusted Jupyter
# server and the kernels where applicants' code runs. It holds the sandbox's own Python
# environment at /opt/sbx-sandbox (the `sandbox` extra of pyproject.toml, where the pins
# live, and sbx itself without its platform dependencies), as scripts/install-sandbox-env
# makes .venv-sandbox for the embedded runtime. Build from the repository's root:
#
#   docker build -f deploy/sandbox.Dockerfile -t sbx-sandbox:latest .
#
# The runtime starts every container as the applicant's uid, with a read-only root, no
# capabilities and the workspace and socket volumes mounted over /home/jovyan and /run/sbx.
FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/sbx-sandbox/bin:$PATH

# The pinned sandbox dependencies first: this layer changes only with pyproject.toml.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN python -m venv /opt/sbx-sandbox \
 && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["sandbox"]))' > /tmp/sandbox-pins.txt \
 && /opt/sbx-sandbox/bin/python -m pip install --requirement /tmp/sandbox-pins.txt \
 && rm /tmp/sandbox-pins.txt

# sbx itself, without dependencies (the kernel provisioner and the execution record).
COPY audit ./audit
COPY gateway ./gateway
COPY sandbox ./sandbox
RUN /opt/sbx-sandbox/bin/python -m pip install --no-deps . \
 && cd / && rm -rf /src \
 && chmod -R go+rX /opt/sbx-sandbox

# The trusted server's configuration and its one kernel spec (whose provisioner records
# every cell), root's and read-only under the container's read-only root.
RUN /opt/sbx-sandbox/bin/python -m sandbox.kernel.kernelspec /etc/sbx/jupyter /opt/sbx-sandbox
ENV JUPYTER_CONFIG_DIR=/etc/sbx/jupyter \
    JUPYTER_PATH=/etc/sbx/jupyter

# The default user, for running the image by hand; the runtime always names the
# applicant's uid. The mount points are owner-only: a new volume copies this mode, and
# the runtime's setup step gives the volume to the sandbox's uid.
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /home/jovyan \
        --shell /usr/sbin/nologin jovyan \
 && install -d -o jovyan -g jovyan -m 0700 /home/jovyan /run/sbx
USER 1000:1000
WORKDIR /home/jovyan
ENV HOME=/home/jovyan
CMD ["jupyterhub-singleuser"]
