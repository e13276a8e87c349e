import { Config, Effect, Layer, Logger, LogLevel } from "effect"
import * as Env from "../config/Env"

export const LogConfig = Config.all({
  format: Env.oneOf("LOG_FORMAT", ["pretty", "json", "logfmt"], "pretty"),
  level: Env.oneOf("LOG_LEVEL", ["debug", "info", "warning", "error"], "info")
})

const levels = {
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error
} as const

const loggers = {
  pretty: Logger.pretty,
  json: Logger.json,
  logfmt: Logger.logFmt
} as const

/**
 * `LOG_FORMAT` and `LOG_LEVEL`: one logger replacing the default, so each line prints once.
 * An invalid value falls back to the defaults here, so that the error about it can be logged.
 */
export const LoggingLive = Layer.unwrapEffect(
  LogConfig.pipe(
    Effect.orElseSucceed(() => ({ format: "pretty", level: "info" } as const)),
    Effect.map(({ format, level }) => Layer.merge(loggers[format], Logger.minimumLogLevel(levels[level])))
  )
)
