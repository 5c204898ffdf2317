# syntax=docker/dockerfile:1
#
# tokenguard image: build with the dev dependencies, ship the production ones only.
#
#   docker build -t tokenguard:0.1.0 .
#   docker run --read-only -v "$PWD/gateway.yaml:/etc/tokenguard/config.yaml:ro" \
#     -e TOKENGUARD_CLIENT_SECRET -p 8000:8000 -p 9100:9100 tokenguard:0.1.0
#   docker run --read-only -v "$PWD/gateway.yaml:/etc/tokenguard/config.yaml:ro" tokenguard:0.1.0 check
#
# NODE_MAJOR must match the Node.js the test suite runs on (package.json "engines").
# Pin both base images by digest in your own build pipeline (tags move).
ARG NODE_MAJOR=20

# ---- build: compile TypeScript with the full dependency tree --------------------------------
FROM node:${NODE_MAJOR}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- prod-deps: production dependencies only, from the lockfile -----------------------------
# A separate stage so this layer is rebuilt only when the lockfile changes. No install
# scripts: every production dependency is plain JavaScript.
FROM node:${NODE_MAJOR}-bookworm-slim AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime: distroless (no shell, no package manager), non-root ---------------------------
FROM gcr.io/distroless/nodejs${NODE_MAJOR}-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="tokenguard" \
      org.opencontainers.image.description="OAuth 2.0 token-introspection sidecar gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
# The code is owned by root and only readable by the runtime user: the process cannot
# rewrite itself. package.json marks dist/ as ES modules ("type": "module"); without it
# Node.js would have to guess the module format of every file.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# Heap sizing. Node 20 has no --max-old-space-size-percentage (that flag arrived in later
# majors). Its default heap limit is derived from the cgroup memory limit (libuv
# uv_get_constrained_memory, cgroup v1 and v2): a quarter of the limit, but never less than
# V8's floor of about 256 MiB on 64-bit. Above ~1 GiB the default is therefore safe; below it
# the heap may exceed the container limit and the kernel OOM-kills the pod before V8 collects.
# So the image keeps Node's cgroup-aware default, and the Kubernetes manifests, which know the
# limit, derive --max-old-space-size from it (62.5 %, through a resourceFieldRef divisor) in
# NODE_OPTIONS (k8s/base/deployment.yaml, docs/kubernetes.md "Heap").
# Source maps make stack traces in the logs point at src/*.ts.
ENV NODE_ENV=production \
    NODE_OPTIONS="--enable-source-maps" \
    TOKENGUARD_CONFIG=/etc/tokenguard/config.yaml
# Numeric, so Kubernetes' runAsNonRoot can verify it (distroless "nonroot" is 65532).
USER 65532:65532
# 8000: the gateway (the Service targets it); 9100: /healthz /readyz /metrics (never exposed).
EXPOSE 8000 9100
# Exec form, no shell: node is PID 1 and receives SIGTERM itself (tokenguard drains on it);
# it spawns no children, so there is nothing to reap. Logs go to stdout, nothing is written
# to disk: the image runs with a read-only root filesystem.
# Arguments go after it: `docker run IMAGE check`, `docker run IMAGE explain GET /api/x`.
ENTRYPOINT ["/nodejs/bin/node", "dist/cli.js"]
