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
    process.stderr.write(`keel: ${error.message} [${error.code}]\n`);
    process.exitCode = 1;
  },
);
