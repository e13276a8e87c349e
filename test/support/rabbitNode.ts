import { execFile } from "node:child_process"
import { chownSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"

/**
 * A RabbitMQ node of a suite's own, on this machine beside the shared broker on 5672: a node name,
 * AMQP port, distribution port and directory of its own. The suites that stop, kill, cut off or
 * reconfigure a broker do it to such a node, never to the shared one. `/etc/rabbitmq/rabbitmq-env.conf`
 * pins the default node name, so every variable that names a node or a file is set per node; the
 * `/usr/sbin` wrapper runs the server as the `rabbitmq` user, whose Erlang cookie all nodes share.
 */
export interface RabbitNode {
  readonly name: string
  readonly amqpPort: number
  readonly amqpUrl: string
  readonly dir: string
}

/** Every node directory is named so: `/tmp/rabbitmq-<suite>-<node>`. */
const DIR_PREFIX = "rabbitmq-"

/**
 * A node named `<short>@localhost` on `amqpPort` (its distribution port 20000 above). Its directory is
 * fixed, not `mkdtemp`'s, so that a suite's workers find the pid file of a node its global setup started.
 */
export const rabbitNode = (suite: string, short: string, amqpPort: number): RabbitNode => ({
  name: `${short}@localhost`,
  amqpPort,
  amqpUrl: `amqp://guest:guest@127.0.0.1:${amqpPort}`,
  dir: join(tmpdir(), `${DIR_PREFIX}${suite}-${short}`)
})

const run = promisify(execFile)

/** Runs one of RabbitMQ's command-line tools against the node named `node`, failing with the tool's own output. */
export const rabbitCli = async (tool: string, node: string, args: ReadonlyArray<string>, timeoutMs = 120_000): Promise<string> => {
  try {
    const { stdout } = await run(tool, ["-q", "-n", node, ...args], { timeout: timeoutMs })
    return stdout
  } catch (error) {
    const { stderr, stdout } = error as { stdout?: string; stderr?: string }
    throw new Error(`${tool} -n ${node} ${args.join(" ")} failed: ${(stderr || stdout || String(error)).trim()}`)
  }
}

/** `rabbitmqctl -n <node> ...args`, failing with the tool's own output. */
export const rabbitmqctlOn = (node: RabbitNode, ...args: ReadonlyArray<string>): Promise<string> => rabbitCli("rabbitmqctl", node.name, args)

const pidFileOf = (node: RabbitNode) => join(node.dir, "pid")

const environmentOf = (node: RabbitNode) => ({
  ...process.env,
  RABBITMQ_NODENAME: node.name,
  RABBITMQ_DIST_PORT: String(node.amqpPort + 20_000),
  RABBITMQ_CONFIG_FILE: join(node.dir, "rabbitmq.conf"),
  RABBITMQ_MNESIA_BASE: join(node.dir, "mnesia"),
  RABBITMQ_LOG_BASE: join(node.dir, "log"),
  RABBITMQ_PID_FILE: pidFileOf(node),
  RABBITMQ_ENABLED_PLUGINS_FILE: join(node.dir, "enabled_plugins")
})

/** The node's Erlang VM process id, from its pid file; undefined when there is none. */
export const nodePid = (node: RabbitNode): number | undefined => {
  try {
    const pid = Number(readFileSync(pidFileOf(node), "utf8").trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** Whether the process runs: exists, and is not a zombie waiting for its parent to reap it. */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return true
  }
}

const exited = async (pid: number, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  while (alive(pid)) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return true
}

/** Whether the node's Erlang VM is running (its pid file names a live process). */
export const nodeRunning = (node: RabbitNode) => {
  const pid = nodePid(node)
  return pid !== undefined && alive(pid)
}

const rabbitmqUser = async () => {
  const { stdout } = await run("id", ["rabbitmq"])
  return { uid: Number(/uid=(\d+)/.exec(stdout)?.[1]), gid: Number(/gid=(\d+)/.exec(stdout)?.[1]) }
}

/**
 * Stops whatever runs as this node, politely and then, if it will not go, by SIGKILL, and removes
 * its directory: for a teardown, and for what a killed run left behind. Never fails.
 */
export const removeNode = async (node: RabbitNode) => {
  const pid = nodePid(node)
  await rabbitmqctlOn(node, "stop", ...(pid === undefined ? [] : [pidFileOf(node)])).catch(() => undefined)
  // Waiting for the process keeps it from writing its last log lines into a removed directory.
  if (pid !== undefined && !(await exited(pid, 30_000))) {
    process.kill(pid, "SIGKILL")
    await exited(pid, 30_000)
  }
  rmSync(node.dir, { recursive: true, force: true })
}

/** Removes every node directory of `suite` a killed run may have left (its nodes must be stopped first). */
export const removeLeftoverDirectories = (suite: string) => {
  for (const entry of readdirSync(tmpdir())) {
    if (entry.startsWith(`${DIR_PREFIX}${suite}-`)) rmSync(join(tmpdir(), entry), { recursive: true, force: true })
  }
}

/**
 * A fresh directory for the node, owned by the `rabbitmq` user, holding its `rabbitmq.conf`: a
 * loopback listener on its AMQP port and `extraConfig`'s lines, and `files` (certificates, say)
 * beside it. Returns the paths of those files.
 */
export const prepareNode = async (
  node: RabbitNode,
  options: { readonly extraConfig?: ReadonlyArray<string>; readonly files?: Readonly<Record<string, string>> } = {}
): Promise<Readonly<Record<string, string>>> => {
  rmSync(node.dir, { recursive: true, force: true })
  mkdirSync(node.dir, { recursive: true })
  const { gid, uid } = await rabbitmqUser()
  const config = [`listeners.tcp.local = 127.0.0.1:${node.amqpPort}`, ...(options.extraConfig ?? [])].join("\n")
  const files: Record<string, string> = { "rabbitmq.conf": `${config}\n`, enabled_plugins: "[].\n", ...options.files }
  const paths: Record<string, string> = {}
  chownSync(node.dir, uid, gid)
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(node.dir, name)
    writeFileSync(paths[name]!, content, { mode: 0o600 })
    chownSync(paths[name]!, uid, gid)
  }
  return paths
}

/** Starts a prepared node (again, after a stop or a kill: its directory keeps its data and membership). */
export const startNode = async (node: RabbitNode) => {
  // A killed node leaves its pid file behind; `wait` would follow the dead process and give up.
  rmSync(pidFileOf(node), { force: true })
  await run("rabbitmq-server", ["-detached"], { env: environmentOf(node), timeout: 60_000 })
  // -detached returns before the node has registered; `wait` follows the pid file until it runs.
  await rabbitmqctlOn(node, "wait", pidFileOf(node), "--timeout", "120")
}

/** Kills the node's Erlang VM at once (no polite stop), and waits until it is gone. */
export const killNode = async (node: RabbitNode) => {
  const pid = nodePid(node)
  if (pid === undefined) throw new Error(`${node.name} has no pid file: is it running?`)
  process.kill(pid, "SIGKILL")
  if (!(await exited(pid, 30_000))) throw new Error(`${node.name} (pid ${pid}) did not die of SIGKILL within 30 s`)
}

/** Stops the node politely, waiting for its process to exit. */
export const stopNode = async (node: RabbitNode) => {
  await rabbitmqctlOn(node, "stop", pidFileOf(node))
}
