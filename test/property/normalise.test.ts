/**
 * Why: the normaliser decides which resource a request is about — the route table matches
 * its `matchPath` and the upstream receives its `path` byte for byte. Any target two servers
 * could read differently (`/public/..;/admin`, `%2e%2e`, `%252e`, `//admin`, `\admin`,
 * `/adm%C4%B1n`) must either be normalised to one canonical spelling or refused with a 400
 * (PRODUCT.md "Routing"). Hand-picked tables (test/normalize-path.test.ts) cover the known
 * tricks; these properties look for the ones nobody listed.
 */
import test from 'ava';
import fc from 'fast-check';
import { GatewayError } from '../../src/errors.js';
import { normaliseRequestTarget, type NormalisedTarget } from '../../src/policy/normalize-path.js';
import {
  canonicalSegment,
  canonicalSegments,
  hostileTarget,
  isCaseFoldingTrap,
  isCompatibilityTrap,
  joinSegments,
  respelling,
} from './_paths.js';

type Outcome = NormalisedTarget | { refused: number };

/** A GatewayError becomes a value; anything else (TypeError, URIError, …) is rethrown: a bug. */
function normalise(target: string): Outcome {
  try {
    return normaliseRequestTarget(target);
  } catch (error) {
    if (error instanceof GatewayError) return { refused: error.status };
    throw error;
  }
}

const accepted = (outcome: Outcome): outcome is NormalisedTarget => !('refused' in outcome);

/** Runs `check` on every target the normaliser accepts. */
const onAccepted = (check: (result: NormalisedTarget, target: string) => boolean) =>
  fc.property(hostileTarget, (target) => {
    const outcome = normalise(target);
    return !accepted(outcome) || check(outcome, target);
  });

const NUM_RUNS = 4_000;

test('any request target is either normalised or refused with a 400, never another exception', (t) => {
  fc.assert(
    fc.property(hostileTarget, (target) => {
      const outcome = normalise(target);
      return accepted(outcome) || outcome.refused === 400;
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('normalising is idempotent: the normalised target normalises to itself', (t) => {
  fc.assert(
    onAccepted((result) => {
      const again = normalise(result.path + result.search);
      return (
        accepted(again) &&
        again.path === result.path &&
        again.search === result.search &&
        again.matchPath === result.matchPath
      );
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('a normalised path is canonical: rooted, no //, no dot-segment, visible ASCII, escapes as %XX upper-case, unreserved never escaped', (t) => {
  fc.assert(
    onAccepted(({ path }) => {
      const segments = path.slice(1).split('/');
      return (
        path.startsWith('/') &&
        !path.includes('//') &&
        !segments.includes('.') &&
        !segments.includes('..') &&
        /^[\x21-\x7e]*$/.test(path) &&
        !/%(?![0-9A-F]{2})/.test(path) &&
        !/%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)/.test(path)
      );
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('matchPath is the percent-decoding of path, and the query string is kept exactly as sent', (t) => {
  fc.assert(
    onAccepted((result, target) => {
      let decoded: string;
      try {
        decoded = decodeURIComponent(result.path);
      } catch {
        return false; // accepted something that is not UTF-8
      }
      const queryAt = target.indexOf('?');
      return (
        result.matchPath === decoded &&
        result.search === (queryAt === -1 ? '' : target.slice(queryAt))
      );
    }),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

// ----- the refusals of the contract (PRODUCT.md "Routing") -----

test('no backslash, encoded / or \\, encoded control character or fragment survives normalisation', (t) => {
  fc.assert(
    onAccepted(
      ({ path, search }) =>
        !path.includes('\\') &&
        !/%(?:2F|5C|[01][0-9A-F]|7F)/i.test(path) &&
        !path.includes('#') &&
        !search.includes('#'),
    ),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('.. above the root is refused, however it is spelled', (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom('..', '%2e%2e', '.%2E', '%2E.'),
      fc.constantFrom('/', '/a/../', '//', '/./'),
      canonicalSegments.map(joinSegments),
      (dotDot, before, rest) => {
        const outcome = normalise(`${before}${dotDot}${rest}`);
        return !accepted(outcome) && outcome.refused === 400;
      },
    ),
    { numRuns: 1_000 },
  );
  t.pass();
});

test('contract: a ; anywhere in the path is refused (raw or %3B)', (t) => {
  fc.assert(
    onAccepted(
      ({ path, matchPath }) =>
        !path.includes(';') && !/%3B/i.test(path) && !matchPath.includes(';'),
    ),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('contract: %25 followed by two hex digits is refused (a second decode would walk up)', (t) => {
  fc.assert(
    onAccepted(({ path }) => !/%25[0-9A-Fa-f]{2}/.test(path)),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('contract: a non-ASCII character whose upper- or lower-case form contains ASCII is refused', (t) => {
  fc.assert(
    onAccepted(({ matchPath }) => ![...matchPath].some(isCaseFoldingTrap)),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

test('the NFKC extension of src/policy/normalize-path.ts: nothing that compatibility normalisation turns into ASCII is accepted', (t) => {
  fc.assert(
    onAccepted(({ matchPath }) => ![...matchPath].some(isCompatibilityTrap)),
    { numRuns: NUM_RUNS },
  );
  t.pass();
});

// ----- one resource, many spellings -----

const plainQuery = fc.stringMatching(/^\?[a-z0-9=&]{0,10}$/);

test('escaped unreserved characters, hex case, //, ./ and x/../ do not change the normalised path', (t) => {
  fc.assert(
    fc.property(
      canonicalSegments
        .chain((segments) =>
          fc.tuple(fc.constant(segments), respelling(segments, false), fc.option(plainQuery)),
        )
        .map(([segments, spelled, search]) => ({
          canonical: joinSegments(segments),
          spelled,
          search: search ?? '',
        })),
      ({ canonical, spelled, search }) => {
        const plain = normalise(canonical + search);
        const other = normalise(spelled + search);
        // The canonical spelling is returned unchanged, and every other spelling becomes it.
        return (
          accepted(plain) &&
          accepted(other) &&
          plain.path === canonical &&
          other.path === canonical &&
          other.matchPath === plain.matchPath &&
          other.search === plain.search
        );
      },
    ),
    { numRuns: 3_000 },
  );
  t.pass();
});

test('contract: a segment ending in . or a space (raw escape or unreserved escape) is refused', (t) => {
  fc.assert(
    fc.property(
      fc.array(canonicalSegment, { minLength: 1, maxLength: 4 }),
      fc.nat(),
      fc.constantFrom('.', '%2e', '%2E', '%20', '.%20', '%20.'),
      (segments, at, tail) => {
        const index = at % segments.length;
        const spoiled = segments.map((segment, position) =>
          position === index ? `${segment}${tail}` : segment,
        );
        try {
          normaliseRequestTarget(`/${spoiled.join('/')}`);
          return false;
        } catch (error) {
          return error instanceof GatewayError && error.status === 400;
        }
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});
