import { Cause, Config, Effect, FiberId, Inspectable, Layer, List, Logger, LogLevel } from "effect"
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
// command, and those writes were a large share of its time (docs/performance.md, "What the
// profiles showed"). Lines wait at most until the end of the turn; whatever is still waiting when
// the process exits is written then.
//
// Not `Logger.batched` in a scope: its flush is a fiber on a timer that wakes every window, idle
// or not, so a window short enough to keep up with this costs CPU while nothing is logged, and
// longer ones logged fewer lines/s (docs/performance.md, "Logging: Logger.batched"); and a crash
// outside Effect loses its buffer, where the "exit" handler still writes this one.

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
const style = (...codes: ReadonlyArray<string>) => {
  const start = codes.map((code) => `\x1b[${code}m`).join("")
  return useColors ? (text: string) => `${start}${text}\x1b[0m` : (text: string) => text
}
const timeStyle = style("37")
const messageStyle = style("1", "36")
const keyStyle = style("1", "37")
const levelLabels: Record<LogLevel.LogLevel["_tag"], string> = {
  All: LogLevel.All.label,
  Trace: style("90")(LogLevel.Trace.label),
  Debug: style("34")(LogLevel.Debug.label),
  Info: style("32")(LogLevel.Info.label),
  Warning: style("33")(LogLevel.Warning.label),
  Error: style("31")(LogLevel.Error.label),
  Fatal: style("101", "30")(LogLevel.Fatal.label),
  None: LogLevel.None.label
}

// Lines come by the thousand per second, so the "HH:MM:SS." of the last line is kept for the next.
let secondStartedAt = 0
let secondLabel = ""
const clockTime = (date: Date) => {
  const millis = date.getTime()
  if (millis - secondStartedAt >= 1000 || millis < secondStartedAt) {
    secondStartedAt = millis - date.getMilliseconds()
    secondLabel = `${twoDigits(date.getHours())}:${twoDigits(date.getMinutes())}:${twoDigits(date.getSeconds())}.`
  }
  const sub = millis - secondStartedAt
  return secondLabel + (sub < 10 ? `00${sub}` : sub < 100 ? `0${sub}` : `${sub}`)
}
const twoDigits = (n: number) => (n < 10 ? `0${n}` : `${n}`)

// `FiberId.threadName` builds a set of ids to print the one id a running fiber has.
const fiberName = (fiberId: FiberId.FiberId) => (fiberId._tag === "Runtime" ? `#${fiberId.id}` : FiberId.threadName(fiberId))

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
  let line = `${timeStyle(`[${clockTime(date)}]`)} ${levelLabels[logLevel._tag]} (${fiberName(fiberId)})`
  if (List.isCons(spans)) {
    const now = date.getTime()
    for (const span of spans) line += ` ${span.label.replace(/[\s="]/g, "_")}=${now - span.startTime}ms`
  }
  line += ":"
  let next = 0
  const first = parts.length > 0 ? structured(parts[0]) : undefined
  if (typeof first === "string") {
    line += " " + messageStyle(first)
    next = 1
  }
  if (!Cause.isEmpty(cause)) line += "\n" + indented(Cause.pretty(cause, { renderErrorCause: true }))
  for (; next < parts.length; next++) line += "\n" + indented(show(Inspectable.redact(parts[next])))
  for (const [key, value] of annotations) line += "\n" + indented(`${keyStyle(`${key}:`)} ${show(Inspectable.redact(value))}`)
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
