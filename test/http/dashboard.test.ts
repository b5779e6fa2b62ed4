// The dashboard's files are served by the API server itself, locked down by a content security policy, with no auth of their own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from '../helpers/server.ts';

test('the dashboard page and its assets are served at /dashboard/ under a same-origin-only CSP', async () => {
  const server = await startTestServer({ env: { LOCALTUNE_API_KEYS: 'team:sk-dashboard-test-key' } });
  try {
    const redirect = await fetch(`${server.url}/dashboard`, { redirect: 'manual' });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get('location'), '/dashboard/');

    // The page itself needs no key (it asks for one); the API it calls does.
    const page = await fetch(`${server.url}/dashboard/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    const html = await page.text();
    for (const asset of ['dashboard.css', 'dashboard.js']) {
      assert.match(html, new RegExp(`"${asset}"`));
      const res = await fetch(`${server.url}/dashboard/${asset}`);
      assert.equal(res.status, 200, asset);
    }
    assert.equal((await fetch(`${server.url}/v1/models`)).status, 401);
    const missing = await fetch(`${server.url}/dashboard/nope.js`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { error: { code: string } }).error.code, 'unknown_url');
  } finally {
    await server.stop();
  }
});
