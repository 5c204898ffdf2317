import base from './ava.config.mjs';

/** `npm test`'s last step: the benchmark smoke test, alone on the machine. */
export default { ...base, files: ['test/bench-smoke.test.ts'] };
