import { Command, HelpDoc, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, ConfigError, Console, Effect, Exit, Option } from "effect"
import { describeConfigError } from "../config/Env"
import { errorMessage } from "./describe"

/**
 * How an operator's tool ends: exit 0 when it did what was asked; 2 for a bad argument (told in
 * one line, nothing done); otherwise the failure's own line and the exit code `exitCodeOf` gives
 * it (1 by default: the broker, the deployment or the configuration is at fault).
 */
export const EXIT_BAD_ARGUMENTS = 2

/** Terminal escapes out, and the doc's paragraphs on one line. */
const oneLine = (doc: HelpDoc.HelpDoc) =>
  HelpDoc.toAnsiText(doc).replace(/\u001b\[[0-9;]*m/g, "").split("\n").map((line) => line.trim()).filter((line) => line !== "").join(" ")

export const writeLine = (line: string) => Effect.sync(() => process.stderr.write(`${line}\n`))

/**
 * @effect/cli prints every validation error as a help document on the console's error stream. The
 * tools print one line instead, so the library's error printing goes nowhere; what the tools
 * themselves write to stderr goes through `writeLine`.
 */
const withoutCliErrorPrinting = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Console.consoleWith((console) =>
    Console.withConsole(effect, { ...console, error: () => Effect.void, unsafe: { ...console.unsafe, error: () => undefined } }))

const INTERRUPTED = 130
const UNEXPECTED = 70

const describeFailure = (error: unknown) => {
  if (ConfigError.isConfigError(error)) return describeConfigError(error)
  if (ValidationError.isValidationError(error) && "error" in error) return `${oneLine(error.error)} (see --help)`
  return errorMessage(error)
}

export const runCli = <Name extends string, R, E, Parsed>(
  command: Command.Command<Name, R, E, Parsed>,
  options: {
    readonly name: string
    readonly version: string
    /** The exit code of a typed failure other than a bad argument; 1 unless told. */
    readonly exitCodeOf?: (error: E) => number
  }
) =>
  Command.run(command, { name: options.name, version: options.version })(process.argv).pipe(
    withoutCliErrorPrinting,
    Effect.catchAll((error) =>
      Effect.zipRight(
        writeLine(describeFailure(error)),
        Effect.fail(ValidationError.isValidationError(error) ? EXIT_BAD_ARGUMENTS : (options.exitCodeOf?.(error as E) ?? 1))
      )),
    Effect.catchAllDefect((defect) =>
      Effect.zipRight(writeLine(`Unexpected failure: ${errorMessage(defect)}`), Effect.fail(UNEXPECTED))),
    Effect.provide(NodeContext.layer),
    (program) =>
      NodeRuntime.runMain(program as Effect.Effect<void, number>, {
        disableErrorReporting: true,
        disablePrettyLogger: true,
        teardown: (exit, onExit) =>
          onExit(Exit.isSuccess(exit) ? 0 : Option.getOrElse(Cause.failureOption(exit.cause as Cause.Cause<number>), () => INTERRUPTED))
      })
  )
