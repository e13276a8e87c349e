# One image for both services; docker-compose.yml picks the entry point.
#
# Two stages: the first installs everything and bundles each service (`npm run build`); the image
# runs those bundles with plain node and carries only the one native addon from node_modules, as `npm start` does on a
# host. A bundle run this way needs about half the memory of the same code under tsx (docs/performance.md).
FROM node:lts-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build

FROM node:lts-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/dist ./dist
# better-sqlite3 is a native addon, left out of the bundle: it and what it loads its binary with.
COPY --from=build /app/node_modules/better-sqlite3 ./node_modules/better-sqlite3
COPY --from=build /app/node_modules/bindings ./node_modules/bindings
COPY --from=build /app/node_modules/file-uri-to-path ./node_modules/file-uri-to-path
# The embedded order store (SQLite, DATABASE_URL unset) lives in /app/data: mount a volume there.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
# Node itself is PID 1 (no npm or npx in between), so SIGTERM reaches the service's graceful shutdown.
# The order service's GC flags are its npm scripts' (docs/performance.md); compose sets each command.
ENTRYPOINT ["node"]
CMD ["--single-threaded-gc", "--max-semi-space-size=8", "--heap-growing-percent=50", "dist/main.mjs"]
