import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema } from "@effect/platform"
import { Effect, Schema } from "effect"

export class Healthy extends Schema.Class<Healthy>("Healthy")({ status: Schema.Literal("ok") }) {}

export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503, description: "The broker connection or the channel the service needs is not open" })
) {}

/** `GET /health/live`: the process answers; the same in every service. */
export const LiveEndpoint = HttpApiEndpoint.get("live", "/health/live").addSuccess(Healthy)

/** `GET /health/live` (the process answers) and `GET /health/ready` (it can do its work now). */
export class HealthApi extends HttpApiGroup.make("health")
  .add(LiveEndpoint)
  .add(HttpApiEndpoint.get("ready", "/health/ready").addSuccess(Healthy).addError(NotReady))
{}

const healthy = new Healthy({ status: "ok" })

/** `GET /health/live`: the process answers. */
export const live = () => Effect.succeed(healthy)

/** `GET /health/ready`: 200 while `isReady`, else 503 saying what is missing. */
export const ready = (isReady: Effect.Effect<boolean>, whatIsMissing: string) => () =>
  Effect.if(isReady, {
    onTrue: () => Effect.succeed(healthy),
    onFalse: () => Effect.fail(new NotReady({ message: whatIsMissing }))
  })
