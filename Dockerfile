# Phoenix's image: the server and its workers, one image (`serve`, `worker deployer|analyzer|all`).
# Built with `docker build -t ghcr.io/phoenix-platform/phoenix:$(node -p "require('./package.json').version") .`;
# deploy/kubernetes/base runs it.

FROM node:20-bookworm-slim AS build
WORKDIR /app
# Dependencies first, so a change to the sources reuses this layer. Scripts are skipped: `prepare`
# builds, and the sources are not here yet (no dependency needs its install script to run).
COPY package.json package-lock.json ./
COPY ui/package.json ui/
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY ui ./ui
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:20-bookworm-slim
# git: promotions commit to the GitOps repository with the git CLI (PHOENIX_GITOPS_REPO).
RUN apt-get update \
  && apt-get install -y --no-install-recommends git ca-certificates \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production \
  HOST=0.0.0.0 \
  PHOENIX_DATA_DIR=/var/lib/phoenix
# Read at run time: package.json (the version), migrations/ (applied at start), dist/ (the server
# and, under dist/ui, the dashboard).
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/migrations ./migrations
# The image's `node` user, by number, so that Kubernetes' runAsNonRoot can check it.
RUN mkdir -p /var/lib/phoenix && chown 1000:1000 /var/lib/phoenix
USER 1000:1000
EXPOSE 8080 50051
ENTRYPOINT ["node", "--enable-source-maps", "dist/bin.js"]
CMD ["serve"]
