#!/usr/bin/env node
import { classify, describeHints } from 'keel';
import { runCli } from './program.js';

// Subcommands are registered in ./program.ts (buildProgram), one line each.

runCli(process.argv).then(
  (code) => {
    // A command may have set its own exit code (e.g. `cache verify` finding problems).
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    const error = classify(err);
    // A command that failed is over: nothing it started and could not stop (a server, a pool, a
    // child process) may keep the process alive once the message is out.
    const hints = describeHints(error.hints);
    const advice = hints === '' ? '' : `keel: what to do: ${hints}\n`;
    process.stderr.write(`keel: ${error.message} [${error.code}]\n${advice}`, () => process.exit(1));
  },
);
