import { runCli } from "../runtime/runCli"
import { dlqCommand, exitCodeOf } from "./DeadLetterCli"

// `npm run dlq -- <list|replay|drop> ...`: exit 0 done; 1 broker, configuration or queue trouble;
// 2 bad arguments, or ids not in the queue. Every failure is one line on stderr.
runCli(dlqCommand, { name: "dlq", version: "2.0.0", exitCodeOf })
