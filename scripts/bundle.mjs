// The last step of `npm run build`: bundles tsc's output (dist/) into dist/bundle/, the
// program that `gatehouse`, `npm start` and the image run. One module instead of about 1,100
// costs start-up a few hundred milliseconds less (resolving, reading and compiling each file
// was most of it), and the configuration and policy validators are compiled here, once,
// instead of at every start. Code loaded only on demand (gRPC, the Admin API client) stays in
// chunks of its own beside the bundle, loaded when first used.
import { relative } from 'node:path'
import { readFile, rm } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

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

await rm(outdir, { recursive: true, force: true })
await build({
  entryPoints: { gatehouse: `${dist}main.js` },
  outdir,
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // A native addon, loaded from node_modules as it is.
  external: ['better-sqlite3'],
  plugins: [ownUrl, precompiled],
  // CommonJS dependencies call require() for Node's own modules; ESM has none of its own.
  banner: { js: "import { createRequire as __gatehouseCreateRequire } from 'node:module'; const require = __gatehouseCreateRequire(import.meta.url);" },
  // Non-ASCII characters escaped: V8 keeps a one-byte source string then, half the memory of
  // the two-byte string one stray character forces for the whole 5 MB bundle.
  charset: 'ascii',
  // Whitespace and comments out (names stay, so stack traces still name functions): the
  // dependencies' comments were half the bundle, and a comment is where a stray non-ASCII
  // character survives `charset` (it is not escaped there). Less to read, scan and keep.
  minifyWhitespace: true,
  legalComments: 'external',
  chunkNames: '[name]-[hash]',
  sourcemap: 'linked',
  logLevel: 'warning'
})
