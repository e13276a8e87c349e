import { HttpApi, HttpApiBuilder, HttpApiSwagger, HttpServerResponse, OpenApi } from "@effect/platform"
import { Effect, Layer } from "effect"

/**
 * `GET /docs`: Swagger UI for the API, generated from the `HttpApi` it is served beside. The
 * `@effect/platform` page inlines the Swagger UI bundle and the spec, so it needs no network (its
 * Scalar counterpart loads its script from a CDN). `GET /openapi.json`: the same OpenAPI document.
 */
export const DocsLive = Layer.mergeAll(
  HttpApiSwagger.layer({ path: "/docs" }),
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function*() {
      const { api } = yield* HttpApi.Api
      const spec = OpenApi.fromApi(api as HttpApi.HttpApi<string, never>)
      yield* router.get("/openapi.json", HttpServerResponse.json(spec))
    })
  )
)
