'use strict'
// The warm-up run scripts/code-cache.mjs starts under the shipped Node flags: the program,
// compiled and run as the launcher does, which writes the code cache of everything compiled so
// far when its parent says the warm-up is over.
const { writeFileSync } = require('node:fs')
const { compile, run, CODE_CACHE } = require('../dist/bundle/gatehouse.js')

const program = compile()
process.once('message', () => {
  // The build's id first (scripts/launcher.cjs), then V8's data.
  writeFileSync(CODE_CACHE, Buffer.concat([Buffer.from(program.build, 'latin1'), program.script.createCachedData()]))
  process.send('written')
})
run(program)
