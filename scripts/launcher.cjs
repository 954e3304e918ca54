#!/usr/bin/env node
'use strict'
// What `gatehouse` runs (dist/bundle/gatehouse.js): the bundle beside it, compiled with the V8
// code cache `npm run build` made there. The cache holds the bytecode of every function a
// warm-up run used, so a start neither parses the 4 MB bundle nor compiles what its first
// requests call. V8 takes a cache only from the same Node version, the same V8 flags and the
// same source, and compiles from source otherwise. It is read from beside the program, written
// only by the build, and trusted as much as the program itself.
const { readFileSync } = require('node:fs')
const { createRequire } = require('node:module')
const { join } = require('node:path')
const { Script } = require('node:vm')

const PROGRAM = join(__dirname, 'program.js')
const CODE_CACHE = join(__dirname, 'program.cache')

/** The program as a script whose value is its module function (scripts/bundle.mjs wraps it). */
function compile () {
  let cachedData
  try {
    cachedData = readFileSync(CODE_CACHE)
  } catch {
    // No cache (a build that made none): V8 compiles from source.
  }
  return new Script(readFileSync(PROGRAM, 'utf8'), { filename: PROGRAM, cachedData })
}

function run (script) {
  const program = { exports: {} }
  script.runInThisContext()(program.exports, createRequire(PROGRAM), program, PROGRAM, __dirname)
}

if (require.main === module) run(compile())
else module.exports = { compile, run, CODE_CACHE }
