#!/usr/bin/env node
// The published entry point: runs the compiled CLI from dist/.
import '../dist/cli/main.js';
