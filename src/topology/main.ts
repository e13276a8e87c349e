import { runCli } from "../runtime/runCli"
import { topologyCommand } from "./TopologyCli"

// `npm run topology`: creates the topology for service users without configure permission (see
// docs/security.md, Least privilege). Exit 0 done; 1 broker, permission or configuration trouble, in one line.
runCli(topologyCommand, { name: "topology", version: "2.0.0" })
