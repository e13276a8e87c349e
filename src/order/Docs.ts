import { HttpApiBuilder, HttpApiSwagger } from "@effect/platform"
import { Layer } from "effect"

/**
 * `GET /docs`: Swagger UI for the API, generated from the `HttpApi` it is served beside. The
 * `@effect/platform` page inlines the Swagger UI bundle and the spec, so it needs no network (its
 * Scalar counterpart loads its script from a CDN). `GET /openapi.json`: the same OpenAPI document.
 */
export const DocsLive = Layer.mergeAll(
  HttpApiSwagger.layer({ path: "/docs" }),
  HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })
)
