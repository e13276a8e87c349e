import { HttpApp, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { Unauthorized } from "./Errors"
import { Authentication } from "./OrderApi"
import { OrderConfig } from "./OrderConfig"

const digest = (token: string) => createHash("sha256").update(token, "utf8").digest()

/** 401 with the challenge of RFC 6750: the API's error schemas carry only the body, so the header is added here. */
const refuse = (challenge: string, message: string) =>
  HttpApp.appendPreResponseHandler((_, response) =>
    Effect.succeed(HttpServerResponse.setHeader(response, "www-authenticate", challenge))
  ).pipe(Effect.zipRight(Effect.fail(new Unauthorized({ message }))))

const missing = refuse("Bearer", "This route needs the header Authorization: Bearer <token>")
const invalid = refuse("Bearer error=\"invalid_token\"", "The bearer token is not valid")

/** `Authentication` as `ORDER_API_TOKEN` says: the token checked on every `/orders` request, or none. */
export const AuthenticationLive = Layer.effect(
  Authentication,
  Effect.map(OrderConfig, ({ apiToken }) => {
    // Without a token, the hot path pays for one constant effect and nothing else.
    if (Option.isNone(apiToken)) return Authentication.of({ bearer: () => Effect.void })
    const expected = digest(Redacted.value(apiToken.value))
    return Authentication.of({
      bearer: (given) =>
        Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
          // The platform hands over what follows the header's first 7 characters, whatever the scheme.
          const token = Redacted.value(given)
          if (token === "" || !/^bearer /i.test(request.headers.authorization ?? "")) return missing
          // Equal-length digests compared in constant time: neither the token nor its length shows in the timing.
          return timingSafeEqual(digest(token), expected) ? Effect.void : invalid
        })
    })
  })
)
