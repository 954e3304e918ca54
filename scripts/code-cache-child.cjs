'use strict'
// The warm-up run scripts/code-cache.mjs starts under the shipped Node flags: the program,
// compiled and run as the launcher does, which writes the code cache of everything compiled so
// far when its parent says the warm-up is over.
const { writeFileSync } = require('node:fs')
const { compile, run, CODE_CACHE } = require('../dist/bundle/gatehouse.js')

const script = compile()
process.once('message', () => {
  writeFileSync(CODE_CACHE, script.createCachedData())
  process.send('written')
})
run(script)
