import { execFile } from "node:child_process"
import { chownSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"

/**
 * A RabbitMQ node of the fault suite's own. The suite stops, restarts and cuts off its broker; doing
 * that to the shared broker on 5672 would break every other test and benchmark running beside it, so
 * it starts a second node on another port and breaks that one.
 */
export const FAULT_NODE = process.env.FAULT_RABBITMQ_NODENAME ?? "fault@localhost"
export const FAULT_PORT = Number(process.env.FAULT_RABBITMQ_PORT ?? 5673)
export const FAULT_DIST_PORT = Number(process.env.FAULT_RABBITMQ_DIST_PORT ?? FAULT_PORT + 20_000)
export const FAULT_AMQP_URL = `amqp://guest:guest@127.0.0.1:${FAULT_PORT}`

const run = promisify(execFile)

/** `rabbitmqctl -n <fault node> ...args`, failing with the tool's own output. */
export const rabbitmqctl = async (...args: ReadonlyArray<string>): Promise<string> => {
  try {
    const { stdout } = await run("rabbitmqctl", ["-q", "-n", FAULT_NODE, ...args], { timeout: 120_000 })
    return stdout
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string }
    throw new Error(`rabbitmqctl ${args.join(" ")} failed: ${(stderr || stdout || String(error)).trim()}`)
  }
}

/** Stops the node; given its pid file, also waits until the process has exited. */
const stopNode = (pidFile?: string) => rabbitmqctl("stop", ...(pidFile === undefined ? [] : [pidFile])).catch(() => undefined)

const DIR_PREFIX = "rabbitmq-fault-"

/**
 * Starts the private node in a fresh directory (stopping one a previous run left behind) and
 * returns its teardown: stop the node, remove the directory.
 */
export const startPrivateBroker = async (): Promise<() => Promise<void>> => {
  await stopNode()
  // What a killed run left behind: its node is stopped now, so its directory can go.
  for (const entry of readdirSync(tmpdir())) {
    if (entry.startsWith(DIR_PREFIX)) rmSync(join(tmpdir(), entry), { recursive: true, force: true })
  }
  const dir = mkdtempSync(join(tmpdir(), DIR_PREFIX))
  writeFileSync(join(dir, "rabbitmq.conf"), `listeners.tcp.local = 127.0.0.1:${FAULT_PORT}\n`)
  writeFileSync(join(dir, "enabled_plugins"), "[].\n")
  const { uid, gid } = await run("id", ["rabbitmq"]).then(({ stdout }) => ({
    uid: Number(/uid=(\d+)/.exec(stdout)?.[1]),
    gid: Number(/gid=(\d+)/.exec(stdout)?.[1])
  }))
  for (const path of [dir, join(dir, "rabbitmq.conf"), join(dir, "enabled_plugins")]) chownSync(path, uid, gid)
  const teardown = async () => {
    // Waiting for the process keeps it from writing its last log lines into a removed directory.
    await stopNode(join(dir, "pid"))
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await run("rabbitmq-server", ["-detached"], {
      env: {
        ...process.env,
        RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq.conf"),
        RABBITMQ_NODENAME: FAULT_NODE,
        RABBITMQ_DIST_PORT: String(FAULT_DIST_PORT),
        RABBITMQ_MNESIA_BASE: join(dir, "mnesia"),
        RABBITMQ_LOG_BASE: join(dir, "log"),
        RABBITMQ_PID_FILE: join(dir, "pid"),
        RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins")
      },
      timeout: 60_000
    })
    // -detached returns before the node has registered; `wait` follows the pid file until it runs.
    await rabbitmqctl("wait", join(dir, "pid"), "--timeout", "120")
  } catch (error) {
    await teardown()
    throw error
  }
  return teardown
}

/** Vitest global setup for the fault suite: the private node lives for the whole run. */
export default async function setup() {
  return startPrivateBroker()
}
