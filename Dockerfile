# Gatehouse: multi-stage build. The runtime image holds the compiled code, production
# dependencies, the example config and policies, and runs as the unprivileged `node` user.

FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 compiles from source when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The gRPC ext_authz service's .proto files, read at start-up from beside dist/.
COPY proto ./proto
COPY package.json ./
COPY config.yaml /etc/gatehouse/config.yaml
COPY policies /etc/gatehouse/policies
RUN mkdir -p /var/lib/gatehouse && chown node:node /var/lib/gatehouse
# The base image's node user, by number: Kubernetes' runAsNonRoot can only verify a numeric USER.
USER 1000:1000
# The SQLite store (sessions, token and JWKS caches, sync queue) lives here: mount a volume
# so a restart keeps the keys that let Gatehouse start while Keycloak is down.
VOLUME ["/var/lib/gatehouse"]
# Nothing else is written: run it with a read-only root file system and a tmpfs for SQLite's
# temporary files, `docker run --read-only --tmpfs /tmp -v gatehouse-data:/var/lib/gatehouse ...`
# (deploy/kubernetes/deployment.yaml does the same; test/integration/read-only-root.test.ts
# runs Gatehouse so, as uid 1000, without a container engine).
# The admin listener (/metrics, /healthz, /readyz, /status) binds every interface of the
# container here, where config.yaml's own default is 127.0.0.1: a container's 127.0.0.1 is its
# own loopback (a pod's, shared by its containers), so kubelet probes and Prometheus, which come
# in on the pod address, could never reach it. The port is not published unless asked
# (-p 9180:9180); in Kubernetes restrict it with a NetworkPolicy, or set GATEHOUSE_ADMIN_HOST
# back to 127.0.0.1 when only the pod itself reads it. `::` listens on IPv6 too. /status holds no
# secret but shows internals (README, "Run it beside an app").
ENV GATEHOUSE_CONFIG=/etc/gatehouse/config.yaml \
    GATEHOUSE_DB=/var/lib/gatehouse/gatehouse.db \
    GATEHOUSE_ADMIN_HOST=0.0.0.0
# 9191: the gRPC ext_authz listener, when enabled (GATEHOUSE_GRPC_ENABLED=true; off by default).
EXPOSE 4180 9180 9191
# Readiness never depends on Keycloak, so an IdP outage does not mark the container unhealthy.
# It asks the admin host given (loopback when that is a wildcard), as `gatehouse status` does.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const h = process.env.GATEHOUSE_ADMIN_HOST || '127.0.0.1'; const host = h === '0.0.0.0' ? '127.0.0.1' : h === '::' ? '[::1]' : h.includes(':') ? '[' + h + ']' : h; fetch('http://' + host + ':' + (process.env.GATEHOUSE_ADMIN_PORT || 9180) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# A larger young generation halves garbage-collection work on the request path (npm run bench).
ENTRYPOINT ["node", "--max-semi-space-size=16", "dist/bundle/gatehouse.js"]
CMD ["serve"]
