/**
 * What `tokenguard check` says about the route list (issues 7 and 10): a route that can never
 * match because an earlier one takes all its requests, an earlier, broader route that takes
 * some of a later route's requests while requiring less, and a method a route lists that an
 * earlier route always takes on its paths — config errors, with both routes' positions.
 */
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import test from 'ava';
import { analyseRoutes } from '../src/policy/route-analysis.js';
import { createRouteTable } from '../src/policy/route-table.js';
import type { RouteConfig } from '../src/config/schema.js';
import { spawnCli } from './_child.js';

type RouteSpec = Partial<RouteConfig>;

const findings = (routes: RouteSpec[], caseSensitive = false) =>
  analyseRoutes(
    createRouteTable({
      routes: routes.map((route) => ({ auth: 'required', scopes: [], ...route })) as RouteConfig[],
      routes_case_sensitive: caseSensitive,
      default_action: 'deny',
    }).routes,
  ).map((finding) => `${finding.kind} ${finding.route}<${finding.earlier}`);

const ROWS: Array<[string, RouteSpec[], string[]]> = [
  [
    'a public prefix above a protected path under it: unreachable',
    [
      { prefix: '/api', auth: 'none' },
      { path: '/api/orders/:id', scopes: ['orders:read'] },
    ],
    ['unreachable 1<0'],
  ],
  [
    'a public GET prefix above a protected prefix for every method: weaker shadow',
    [
      { prefix: '/api', auth: 'none', methods: ['GET'] },
      { prefix: '/api/orders', scopes: ['orders:write'] },
    ],
    ['weaker_shadow 1<0'],
  ],
  [
    'a trailing-slash prefix covers the path without it',
    [
      { prefix: '/admin/', scopes: ['admin'] },
      { path: '/admin', scopes: ['root'] },
    ],
    ['unreachable 1<0'],
  ],
  [
    'prefix: / takes everything after it',
    [{ prefix: '/', auth: 'none' }, { path: '/healthz' }],
    ['unreachable 1<0'],
  ],
  [
    'the same pattern with another parameter name',
    [{ path: '/reports/:id' }, { path: '/reports/:rid', scopes: ['r'] }],
    ['unreachable 1<0'],
  ],
  [
    'a parameter route above a literal it matches',
    [{ path: '/users/:id', scopes: ['u'] }, { path: '/users/me' }],
    ['unreachable 1<0'],
  ],
  [
    'case-insensitive matching makes /API cover /api',
    [{ prefix: '/API', auth: 'none' }, { path: '/api/x' }],
    ['unreachable 1<0'],
  ],
  [
    'case-sensitive: /API does not cover /api',
    [{ prefix: '/API', auth: 'none' }, { path: '/api/x' }],
    [],
  ],
  [
    'a narrower route first is the deliberate exception: nothing to say',
    [
      { path: '/api/orders/:id', methods: ['GET'], scopes: ['orders:read'] },
      { prefix: '/api/orders', scopes: ['orders:write'] },
    ],
    [],
  ],
  [
    'disjoint methods: nothing to say',
    [
      { path: '/api/orders/:id', methods: ['GET'], scopes: ['orders:read'] },
      { prefix: '/api/orders', methods: ['POST', 'PUT', 'DELETE'], scopes: ['orders:write'] },
    ],
    [],
  ],
  [
    'a stronger broad rule first is not weaker',
    [
      { prefix: '/api', methods: ['GET'], scopes: ['admin'] },
      { prefix: '/api/orders', scopes: ['admin'] },
    ],
    [],
  ],
  [
    'segment-bounded: /api does not cover /apix',
    [{ prefix: '/api', auth: 'none' }, { path: '/apix' }],
    [],
  ],
  [
    'methods: a GET-only earlier route does not make an all-method route unreachable',
    [
      { prefix: '/x', methods: ['GET'], scopes: ['a'] },
      { prefix: '/x', scopes: ['a'] },
    ],
    [],
  ],
  [
    'overlapping methods on the same path: the later route lists a method it never gets',
    [
      { path: '/a', methods: ['GET', 'POST'], scopes: ['a'] },
      { path: '/a', methods: ['POST', 'DELETE'], scopes: ['a'] },
    ],
    ['method_overlap 1<0'],
  ],
  [
    'overlapping methods, the earlier route weaker: one finding, not two',
    [
      { prefix: '/api', methods: ['GET'], auth: 'none' },
      { path: '/api/orders', methods: ['GET', 'POST'], scopes: ['orders:write'] },
    ],
    ['method_overlap 1<0'],
  ],
  [
    'HEAD implied by GET is not an overlap: only written methods count',
    [
      { path: '/a', methods: ['HEAD'], scopes: ['a'] },
      { path: '/a', methods: ['GET', 'POST'], scopes: ['a'] },
    ],
    [],
  ],
  [
    'HEAD written alone is',
    [
      { path: '/a', methods: ['GET'], scopes: ['a'] },
      { path: '/a', methods: ['HEAD', 'POST'], scopes: ['a'] },
    ],
    ['method_overlap 1<0'],
  ],
  [
    'a later route without methods is the broad rule below an exception: nothing to say',
    [
      { path: '/a', methods: ['GET'], auth: 'none' },
      { path: '/a', scopes: ['a'] },
    ],
    [],
  ],
  [
    'overlapping methods where the earlier path is narrower: the later route still gets them elsewhere',
    [
      { path: '/a/:id', methods: ['GET'], scopes: ['r'] },
      { prefix: '/a', methods: ['GET', 'POST'], scopes: ['r'] },
    ],
    [],
  ],
  [
    'a broader hierarchic route first is weaker than a later exact one with the same words',
    [
      { prefix: '/api', methods: ['GET'], scopes: ['orders.read'], scope_match: 'hierarchic' },
      { prefix: '/api/orders', scopes: ['orders.read'] },
    ],
    ['weaker_shadow 1<0'],
  ],
  [
    'a broader exact route first is as strict as a later hierarchic one with the same words',
    [
      { prefix: '/api', methods: ['GET'], scopes: ['orders.read'] },
      { prefix: '/api/orders', scopes: ['orders.read'], scope_match: 'hierarchic' },
    ],
    [],
  ],
  [
    "a broader route first without the later route's any_scopes is weaker",
    [
      { prefix: '/api', methods: ['GET'], scopes: ['orders'] },
      { prefix: '/api/orders', scopes: ['orders'], any_scopes: ['eu', 'us'] },
    ],
    ['weaker_shadow 1<0'],
  ],
  [
    'a broader route first requiring one of the later any_scopes outright is as strict',
    [
      { prefix: '/api', methods: ['GET'], scopes: ['eu'] },
      { prefix: '/api/orders', any_scopes: ['eu', 'us'] },
    ],
    [],
  ],
  [
    'a broader route first with a narrower any_scopes is as strict; a wider one is weaker',
    [
      { prefix: '/api', methods: ['GET'], any_scopes: ['us'] },
      { prefix: '/api/orders', methods: ['POST'], any_scopes: ['eu', 'us'] },
      { prefix: '/api/orders/x', any_scopes: ['us'] },
    ],
    ['weaker_shadow 2<1'],
  ],
];

for (const [title, routes, expected] of ROWS) {
  test(title, (t) => {
    const caseSensitive = title.startsWith('case-sensitive');
    t.deepEqual(findings(routes, caseSensitive), expected);
  });
}

test('tokenguard check reports an unreachable route with both routes positions and exits 1', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'tokenguard-check-'));
  try {
    const file = path.join(dir, 'shadow.yaml');
    await writeFile(
      file,
      [
        'introspection:',
        '  endpoint: http://127.0.0.1:9000/introspect',
        '  client_id: a',
        '  client_secret: b',
        'routes:',
        '  - prefix: /api',
        '    auth: none',
        '  - path: /api/orders/:id',
        '    scopes: [orders:read]',
        '',
      ].join('\n'),
    );
    const child = spawnCli(['check', '--config', file]);
    const exit = await child.waitForExit(20_000);
    t.is(exit?.code, 1);
    t.is(child.stdout(), '');
    t.is(
      child.stderr().trim(),
      `${file}:8:5: routes[1]: can never match: routes[0] (prefix /api, any method) comes first and takes every request routes[1] (path /api/orders/:id, any method) would (first match wins) (routes[0] is at ${file}:6:5)`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
