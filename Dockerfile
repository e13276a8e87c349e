# One image for both services; docker-compose.yml picks the entry point. No build step: tsx runs
# the TypeScript sources, as `npm start` does.
FROM node:lts-slim

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so a source change reuses this layer. tsx is a runtime dependency.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY src ./src

USER node
# Node itself is PID 1 (no npm or npx in between), so SIGTERM reaches the service's graceful shutdown.
ENTRYPOINT ["node", "--import", "tsx"]
CMD ["src/main.ts"]
