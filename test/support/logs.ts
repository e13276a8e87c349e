import { Logger } from "effect"

/** A logger that keeps every line's message, in place of the default one. */
export const recordingLogger = () => {
  const lines: Array<string> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ message }) => lines.push((Array.isArray(message) ? message : [message]).map(String).join(" ")))
  )
  return { lines, layer }
}
