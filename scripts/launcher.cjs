#!/usr/bin/env node
'use strict'
// What `gatehouse` runs (dist/bundle/gatehouse.js): the bundle beside it, compiled with the V8
// code cache `npm run build` made there. The cache holds the bytecode of every function a
// warm-up run used, so a start neither parses the 4 MB bundle nor compiles what its first
// requests call. V8 takes a cache only from the same Node version, under the same V8 flags and
// for a source of the same length (the build's id, below, makes sure it is the same source),
// and compiles from source otherwise. The cache is read from beside the program, written only
// by the build, and trusted as much as the program itself.
const { readFileSync } = require('node:fs')
const { createRequire } = require('node:module')
const { join } = require('node:path')
const { Script } = require('node:vm')

const PROGRAM = join(__dirname, 'program.js')
const CODE_CACHE = join(__dirname, 'program.cache')

/**
 * The build a program or cache belongs to: program.js opens with a comment naming it, and
 * program.cache with the same 36 characters before V8's data. V8 checks a cache against its
 * source by length only, so a cache is offered only to the build that made it.
 */
function buildOf (text) {
  return /^(?:#![^\n]*\n)?\/\* gatehouse build ([0-9a-f-]{36}) \*\//.exec(text)?.[1] ?? null
}

/** The program as a script whose value is its module function (scripts/bundle.mjs wraps it). */
function compile () {
  // The build makes the bundle pure ASCII and checks it, so Latin-1 reads it exactly: a plain
  // copy (and, at this size, a string kept outside V8's heap), where decoding 4.5 MB as UTF-8
  // took about 10 ms of every start.
  const source = readFileSync(PROGRAM, 'latin1')
  const build = buildOf(source.slice(0, 200))
  let cachedData
  try {
    const cache = readFileSync(CODE_CACHE)
    if (build !== null && cache.subarray(0, build.length).toString('latin1') === build) cachedData = cache.subarray(build.length)
  } catch {
    // No cache (a build that made none): V8 compiles from source.
  }
  return { script: new Script(source, { filename: PROGRAM, cachedData }), build }
}

/** Runs a compiled program as the process's main module's code. */
function run ({ script }) {
  const program = { exports: {} }
  script.runInThisContext()(program.exports, createRequire(PROGRAM), program, PROGRAM, __dirname)
}

if (require.main === module) run(compile())
else module.exports = { compile, run, CODE_CACHE }
