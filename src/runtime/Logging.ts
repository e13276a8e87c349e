import { Cause, Config, Effect, FiberId, HashMap, Inspectable, Layer, List, Logger, LogLevel } from "effect"
import { inspect } from "node:util"
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

// ---------------------------------------------------------------------------------------------
// Output: the lines of one event-loop turn in one write.
//
// Why: Effect's loggers `console.log` each line, one synchronous `write` to a pipe per line (and
// per annotation line, in the pretty format). Draining a backlog, the consumer prints a line per
// command, and profiles put about 17% of its time in those writes. Lines wait at most until the
// end of the turn; whatever is still waiting when the process exits is written then.

let pendingOutput = ""
let flushScheduled = false
// Beyond this, write at once rather than hold more (a turn that logs a lot, e.g. at prefetch 1000).
const MAX_PENDING_CHARS = 64 * 1024

const flushOutput = () => {
  flushScheduled = false
  if (pendingOutput === "") return
  const output = pendingOutput
  pendingOutput = ""
  // Synchronous on Linux for files, pipes and terminals, so also safe in the "exit" handler.
  process.stdout.write(output)
}

const writeLine = (line: string) => {
  pendingOutput += line + "\n"
  if (pendingOutput.length >= MAX_PENDING_CHARS) flushOutput()
  else if (!flushScheduled) {
    flushScheduled = true
    setImmediate(flushOutput)
  }
}

process.on("exit", flushOutput)

// ---------------------------------------------------------------------------------------------
// Formats. json and logfmt are Effect's own formatters; pretty prints what Effect's `Logger.pretty`
// prints (which can only write through `console`), line for line.

const useColors = process.stdout.isTTY === true
const color = (text: string, ...codes: ReadonlyArray<string>) =>
  useColors ? `${codes.map((code) => `\x1b[${code}m`).join("")}${text}\x1b[0m` : text
const BOLD = "1"
const WHITE = "37"
const CYAN = "36"
const levelColors: Partial<Record<LogLevel.LogLevel["_tag"], ReadonlyArray<string>>> = {
  Trace: ["90"],
  Debug: ["34"],
  Info: ["32"],
  Warning: ["33"],
  Error: ["31"],
  Fatal: ["101", "30"]
}

const twoDigits = (n: number) => (n < 10 ? `0${n}` : `${n}`)
const clockTime = (date: Date) =>
  `${twoDigits(date.getHours())}:${twoDigits(date.getMinutes())}:${twoDigits(date.getSeconds())}.${
    String(date.getMilliseconds()).padStart(3, "0")
  }`

/** As `console.log` shows a value: strings as they are, anything else inspected. */
const show = (value: unknown) => (typeof value === "string" ? value : inspect(value, { colors: useColors }))
/** What Effect's structured loggers make of a message part (a string stays a string). */
const structured = (value: unknown) =>
  typeof value === "bigint" || typeof value === "function" || typeof value === "symbol"
    ? String(value)
    : Inspectable.toJSON(value)
// The indentation of `console.group`, which the pretty format puts under the first line.
const indented = (text: string) => "  " + text.replaceAll("\n", "\n  ")

const prettyLine = ({ annotations, cause, date, fiberId, logLevel, message, spans }: Logger.Logger.Options<unknown>) => {
  const parts = Array.isArray(message) ? message : [message]
  let line = `${color(`[${clockTime(date)}]`, WHITE)} ${color(logLevel.label, ...(levelColors[logLevel._tag] ?? []))} (${
    FiberId.threadName(fiberId)
  })`
  if (List.isCons(spans)) {
    const now = date.getTime()
    for (const span of spans) line += ` ${span.label.replace(/[\s="]/g, "_")}=${now - span.startTime}ms`
  }
  line += ":"
  let next = 0
  const first = parts.length > 0 ? structured(parts[0]) : undefined
  if (typeof first === "string") {
    line += " " + color(first, BOLD, CYAN)
    next = 1
  }
  if (!Cause.isEmpty(cause)) line += "\n" + indented(Cause.pretty(cause, { renderErrorCause: true }))
  for (; next < parts.length; next++) line += "\n" + indented(show(Inspectable.redact(parts[next])))
  if (HashMap.size(annotations) > 0) {
    for (const [key, value] of annotations) {
      line += "\n" + indented(`${color(`${key}:`, BOLD, WHITE)} ${show(Inspectable.redact(value))}`)
    }
  }
  return line
}

const loggers = {
  pretty: Logger.make((options) => writeLine(prettyLine(options))),
  json: Logger.map(Logger.jsonLogger, writeLine),
  logfmt: Logger.map(Logger.logfmtLogger, writeLine)
} as const

/**
 * `LOG_FORMAT` and `LOG_LEVEL`: one logger replacing the default, so each line prints once.
 * An invalid value falls back to the defaults here, so that the error about it can be logged.
 */
export const LoggingLive = Layer.unwrapEffect(
  LogConfig.pipe(
    Effect.orElseSucceed(() => ({ format: "pretty", level: "info" } as const)),
    Effect.map(({ format, level }) =>
      Layer.merge(Logger.replace(Logger.defaultLogger, loggers[format]), Logger.minimumLogLevel(levels[level]))
    )
  )
)
