#!/usr/bin/env node
import { classify } from 'keel';
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
    process.stderr.write(`keel: ${error.message} [${error.code}]\n`, () => process.exit(1));
  },
);
