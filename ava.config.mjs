export default {
  // The benchmark smoke test measures CPU per request: it runs alone afterwards
  // (ava.bench.config.mjs), not beside test files that load both cores.
  files: ['test/**/*.test.ts', '!test/bench-smoke.test.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  timeout: '60s',
  workerThreads: false,
  concurrency: 2,
};
