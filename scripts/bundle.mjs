// The last step of `npm run build`: bundles tsc's output (dist/) into dist/bundle/, the
// program that `gatehouse`, `npm start` and the image run. One module instead of about 1,100
// costs start-up a few hundred milliseconds less (resolving, reading and compiling each file
// was most of it), and the configuration and policy validators are compiled here, once,
// instead of at every start. Code loaded only on demand (gRPC, the Admin API client) is
// in the same file but is only evaluated when first used.
//
// The bundle is CommonJS, one file, so that it can be compiled through node:vm with a V8 code
// cache (Node 20 has none for ES modules): dist/bundle/gatehouse.js is the launcher
// (scripts/launcher.cjs), dist/bundle/program.js the bundle, dist/bundle/program.cache the cache
// scripts/code-cache.mjs writes after a warm-up run. The program stays strict mode, as it was
// as an ES module.
import { randomUUID } from 'node:crypto'
import { relative } from 'node:path'
import { chmod, copyFile, readFile, rm, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { writeCodeCache } from './code-cache.mjs'

const dist = fileURLToPath(new URL('../dist/', import.meta.url))
const outdir = `${dist}bundle`
const { PRECOMPILED_SCHEMAS, standaloneValidatorSource } = await import(new URL('../dist/config/standalone.js', import.meta.url).href)

/**
 * Modules that find files beside themselves (`new URL('./migrations/', import.meta.url)`, the
 * package.json, proto/) keep finding them: in the bundle, import.meta.url names the bundle,
 * so each module's own is rewritten to the address of its file in dist/.
 */
const ownUrl = {
  name: 'own-import-meta-url',
  setup (b) {
    b.onLoad({ filter: /\/dist\/.*\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8')
      if (!text.includes('import.meta.url')) return undefined
      const own = `../${relative(dist, args.path)}`
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(own)}, import.meta.url).href`), loader: 'js', resolveDir: args.path.replace(/\/[^/]+$/, '') }
    })
  }
}

/** config/precompiled.js becomes Ajv's standalone code for every schema it names. */
const precompiled = {
  name: 'precompiled-validators',
  setup (b) {
    b.onLoad({ filter: /\/dist\/config\/precompiled\.js$/ }, () => {
      const names = Object.keys(PRECOMPILED_SCHEMAS)
      const imports = names.map((name) => `import ${name} from 'precompiled-validator:${name}'`).join('\n')
      return { contents: `${imports}\nexport const precompiled = { ${names.join(', ')} }\n`, loader: 'js', resolveDir: dist }
    })
    b.onResolve({ filter: /^precompiled-validator:/ }, (args) => ({ path: args.path.slice('precompiled-validator:'.length), namespace: 'precompiled-validator' }))
    b.onLoad({ filter: /.*/, namespace: 'precompiled-validator' }, (args) => ({
      contents: standaloneValidatorSource(PRECOMPILED_SCHEMAS[args.path]),
      loader: 'js',
      resolveDir: dist
    }))
  }
}

/**
 * Names this build inside program.js and program.cache alike. V8 checks a cache against its
 * source by length only, so a program.js from one build beside the cache of another of the same
 * length would run the other's bytecode; the launcher compares the ids first.
 */
const BUILD_ID = randomUUID()

await rm(outdir, { recursive: true, force: true })
await build({
  entryPoints: { program: `${dist}main.js` },
  outdir,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // A native addon, loaded from node_modules as it is.
  external: ['better-sqlite3'],
  plugins: [ownUrl, precompiled],
  // The launcher calls the program as a CommonJS module's function; each module's
  // import.meta.url is the program's own address.
  // The build's id comes first: the launcher takes a code cache only from the same build.
  banner: { js: `/* gatehouse build ${BUILD_ID} */(function (exports, require, module, __filename, __dirname) { 'use strict'; const __gatehouseUrl = require('node:url').pathToFileURL(__filename).href;` },
  footer: { js: '})' },
  define: { 'import.meta.url': '__gatehouseUrl' },
  // Non-ASCII characters escaped: V8 keeps a one-byte source string then, half the memory of
  // the two-byte string one stray character forces for the whole 5 MB bundle.
  charset: 'ascii',
  // Whitespace and comments out (names stay, so stack traces still name functions): the
  // dependencies' comments were half the bundle, and a comment is where a stray non-ASCII
  // character survives `charset` (it is not escaped there). Less to read, scan and keep.
  minifyWhitespace: true,
  legalComments: 'external',
  sourcemap: 'linked',
  logLevel: 'warning'
})
// The launcher reads the program as Latin-1 (scripts/launcher.cjs), which is exact for ASCII only.
const program = await readFile(`${outdir}/program.js`)
const nonAscii = program.findIndex((byte) => byte > 0x7f)
if (nonAscii !== -1) throw new Error(`dist/bundle/program.js has a non-ASCII byte at offset ${nonAscii}: ${JSON.stringify(program.subarray(Math.max(0, nonAscii - 40), nonAscii + 40).toString('utf8'))}`)

// The launcher, and the package.json that makes .js files here CommonJS (the project's are ESM).
await copyFile(fileURLToPath(new URL('./launcher.cjs', import.meta.url)), `${outdir}/gatehouse.js`)
await chmod(`${outdir}/gatehouse.js`, 0o755)
await writeFile(`${outdir}/package.json`, '{ "type": "commonjs" }\n')
await writeCodeCache()
