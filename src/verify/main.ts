import { runCli } from "../runtime/runCli"
import { verifyCommand } from "./VerifyCli"

runCli(verifyCommand, { name: "npm run verify --", version: "2.0.0" })
