// The package as users load it: `import` and `require` both work and see one set of objects, the
// declarations are complete from either kind of module, and the entry exports exactly the public
// API (nothing internal: no config compiler, no wire format, no Device constructor).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { ensureBuilt, requireNative, root } from './support/build.ts';

/** Every value the package entry exports. */
const VALUE_EXPORTS = [
  'CAPABILITIES',
  'DEFAULT_RESTART_POLICY',
  'DEFAULT_START_TIMEOUT_MS',
  'DEFAULT_STOP_TIMEOUT_MS',
  'Device',
  'DeviceAbortError',
  'DeviceError',
  'DeviceGroup',
  'NotSupportedError',
  'OptionError',
  'explainPolicy',
  'startDevice',
];

/** Every type-only export of the declarations. */
const TYPE_EXPORTS = [
  'AddOptions',
  'CachePolicy',
  'DeviceErrorDetails',
  'DeviceErrorReason',
  'DeviceEvents',
  'DeviceGroupEvents',
  'DeviceGroupOptions',
  'DeviceOptions',
  'DeviceStats',
  'ExitStatus',
  'GaveUpEvent',
  'IdExplanation',
  'IdRange',
  'IdTranslation',
  'IdTranslationType',
  'LogLevel',
  'LogRecord',
  'MigrationMode',
  'MigrationOnError',
  'OptionErrorKind',
  'OptionErrorReason',
  'PolicyExplanation',
  'PolicyQuery',
  'PolicyRuleRef',
  'QueueStats',
  'RestartPolicy',
  'RestartedEvent',
  'RestartingEvent',
  'SandboxMode',
  'SeccompAction',
  'StartOptions',
  'XattrExplanation',
  'XattrMapRule',
  'XattrMapScope',
  'XattrOutcome',
];

test.before(() => {
  requireNative();
  ensureBuilt();
});

/** A project folder with the package installed under its name (a link to this checkout). */
function consumerDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfsd-entry-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'virtiofsd'), 'dir');
  return dir;
}

function runNode(dir: string, file: string, source: string): { status: number | null; stdout: string; stderr: string } {
  fs.writeFileSync(path.join(dir, file), source);
  const run = spawnSync(process.execPath, [path.join(dir, file)], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

test('require and import of the package expose exactly the public values, as one set of objects', (t) => {
  const dir = consumerDir();
  try {
    const cjs = runNode(
      dir,
      'probe.cjs',
      `const lib = require('virtiofsd');
       let deep = null;
       try { require('virtiofsd/dist/device.js'); deep = 'loaded'; } catch (e) { deep = e.code; }
       process.stdout.write(JSON.stringify({ names: Object.keys(lib).sort(), deep }));`,
    );
    t.is(cjs.status, 0, cjs.stderr);
    const esm = runNode(
      dir,
      'probe.mjs',
      `import * as lib from 'virtiofsd';
       import { createRequire } from 'node:module';
       const cjs = createRequire(import.meta.url)('virtiofsd');
       const same = Object.keys(lib).every((name) => lib[name] === cjs[name]);
       let deep = null;
       try { await import('virtiofsd/dist/config.js'); deep = 'loaded'; } catch (e) { deep = e.code; }
       process.stdout.write(JSON.stringify({ names: Object.keys(lib).sort(), same, deep }));`,
    );
    t.is(esm.status, 0, esm.stderr);
    const fromRequire = JSON.parse(cjs.stdout);
    const fromImport = JSON.parse(esm.stdout);
    t.deepEqual(fromRequire.names, VALUE_EXPORTS);
    t.deepEqual(fromImport.names, VALUE_EXPORTS);
    t.true(fromImport.same, 'the ES module entry re-exports the CommonJS objects (one Device class)');
    // Internal modules are not reachable by a package path.
    t.is(fromRequire.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED');
    t.is(fromImport.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an ES module and a CommonJS module each start and stop a device through the package', (t) => {
  const dir = consumerDir();
  try {
    const scenario = (socket: string): string => `
      const socketPath = ${JSON.stringify(path.join(dir, socket))};
      const group = new DeviceGroup();
      const device = await group.add('one', { sharedDir: ${JSON.stringify(dir)}, socketPath });
      const isDevice = device instanceof Device;
      const status = await device.stop();
      process.stdout.write(JSON.stringify({ isDevice, status }));`;
    const esm = runNode(dir, 'run.mjs', `import { Device, DeviceGroup } from 'virtiofsd';\n${scenario('esm.sock')}`);
    t.is(esm.status, 0, esm.stderr);
    t.deepEqual(JSON.parse(esm.stdout), { isDevice: true, status: { code: 0, signal: null } });
    const cjs = runNode(dir, 'run.cjs', `const { Device, DeviceGroup } = require('virtiofsd');\n(async () => {${scenario('cjs.sock')}})();`);
    t.is(cjs.status, 0, cjs.stderr);
    t.deepEqual(JSON.parse(cjs.stdout), { isDevice: true, status: { code: 0, signal: null } });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Type-checks `files` (name → source) in a consumer project with Node's own module resolution. */
function typeCheck(dir: string, files: Record<string, string>): string[] {
  const names = Object.entries(files).map(([name, source]) => {
    fs.writeFileSync(path.join(dir, name), source);
    return path.join(dir, name);
  });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', type: 'commonjs' }));
  const program = ts.createProgram(names, {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.Node16,
    moduleResolution: ts.ModuleResolutionKind.Node16,
    target: ts.ScriptTarget.ES2022,
    types: ['node'],
    typeRoots: [path.join(root, 'node_modules', '@types')],
    skipLibCheck: false,
  });
  return ts.getPreEmitDiagnostics(program).map((d) => `${d.file ? path.basename(d.file.fileName) : ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
}

const TYPED_USE = `
  async function use(): Promise<void> {
    const controller = new AbortController();
    const device: Device = await startDevice({ sharedDir: '/srv', socketPath: '/tmp/s' }, { signal: controller.signal });
    device.on('listening', (socket: string) => socket.length);
    device.on('exit', (status: ExitStatus) => status.code);
    device.on('error', (error: DeviceError) => error.reason satisfies DeviceErrorReason);
    await device.ready;
    const group = new DeviceGroup({ restart: { initialDelayMs: 100, maxRestarts: 3 } });
    group.on('log', (name: string, record: LogRecord) => name + record.message);
    group.on('restarting', (event: RestartingEvent) => event.delayMs);
    const status: ExitStatus = await device.exited;
    void status;
  }
  void use;
`;

test('the declarations are complete for ES module and CommonJS consumers', (t) => {
  const dir = consumerDir();
  try {
    const imports = 'Device, DeviceError, DeviceErrorReason, DeviceGroup, ExitStatus, LogRecord, RestartingEvent, startDevice';
    const diagnostics = typeCheck(dir, {
      'use.mts': `import { ${imports} } from 'virtiofsd';\n${TYPED_USE}`,
      'use.cts': `import { ${imports} } from 'virtiofsd';\n${TYPED_USE}`,
    });
    t.deepEqual(diagnostics, []);
    // The constructor is not part of the API, in the types either.
    const misuse = typeCheck(dir, { 'misuse.cts': "import { Device } from 'virtiofsd';\nexport const d = new Device();\n" });
    t.true(misuse.some((message) => /constructor of class 'Device' is private/i.test(message)), misuse.join('\n'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the declarations export exactly the public values and types', (t) => {
  const entry = path.join(root, 'dist', 'index.d.ts');
  const program = ts.createProgram([entry], { noEmit: true, types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')] });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entry)!)!;
  const values: string[] = [];
  const types: string[] = [];
  for (const symbol of checker.getExportsOfModule(moduleSymbol)) {
    const target = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
    (target.flags & ts.SymbolFlags.Value ? values : types).push(symbol.name);
  }
  t.deepEqual(values.sort(), VALUE_EXPORTS);
  t.deepEqual(types.sort(), TYPE_EXPORTS);
});

test('docs/api.md is the reference of the built declarations, one section per export', (t) => {
  const check = spawnSync(process.execPath, [path.join(root, 'scripts', 'api-doc.mjs'), '--check'], { encoding: 'utf8' });
  t.is(check.status, 0, check.stderr);
  const sections = [...fs.readFileSync(path.join(root, 'docs', 'api.md'), 'utf8').matchAll(/^### `(\w+)`$/gm)].map((match) => match[1]);
  t.deepEqual(sections.sort(), [...VALUE_EXPORTS, ...TYPE_EXPORTS].sort());
});
