'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { createServer, route } = require('../src/server');

describe('gateway routes', () => {
  it('maps a known service to its backend', () => {
    assert.deepEqual(route('/api/orders/42'), {
      service: 'orders',
      url: 'http://orders:8002/42',
    });
  });

  it('refuses unknown services and paths', () => {
    assert.equal(route('/api/nope/1'), null);
    assert.equal(route('/etc/passwd'), null);
  });
});

describe('gateway server', () => {
  let server;
  let base;
  before(async () => {
    server = createServer();
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));

  it('answers /health', async () => {
    const res = await fetch(`${base}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok', service: 'gateway' });
  });

  it('redirects API calls to the backend', async () => {
    const res = await fetch(`${base}/api/identity/me`, { redirect: 'manual' });
    assert.equal(res.status, 307);
    assert.equal(res.headers.get('location'), 'http://identity:8001/me');
  });
});
