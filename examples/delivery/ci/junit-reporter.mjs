// A `node --test` reporter that writes JUnit XML (Node 18.15+; the built-in `junit`
// reporter needs Node 20.13+). Use it with a second reporter for the terminal:
//   node --test --test-reporter=spec --test-reporter-destination=stdout \
//               --test-reporter=./junit-reporter.mjs --test-reporter-destination=out.xml
//
// Events arrive when a test ends, children before their parent, so a test whose end
// finds finished children one level deeper is a suite (`describe`) holding them.

const esc = (s) =>
  String(s)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');

function caseXml(t, classname) {
  const time = ((t.details?.duration_ms ?? 0) / 1000).toFixed(3);
  const head = `    <testcase classname="${esc(classname)}" name="${esc(t.name)}" time="${time}"`;
  if (t.skip || t.todo) {
    return `${head}><skipped/></testcase>`;
  }
  if (t.failed) {
    const err = t.details?.error;
    const message = err?.cause?.message ?? err?.message ?? 'failed';
    return `${head}><failure message="${esc(message)}">${esc(err?.cause?.stack ?? err?.stack ?? message)}</failure></testcase>`;
  }
  return `${head}/>`;
}

function suiteXml(name, cases) {
  const failures = cases.filter((c) => c.failed).length;
  const skipped = cases.filter((c) => c.skip || c.todo).length;
  const time = cases.reduce((s, c) => s + (c.details?.duration_ms ?? 0), 0) / 1000;
  return [
    `  <testsuite name="${esc(name)}" tests="${cases.length}" failures="${failures}" errors="0" skipped="${skipped}" time="${time.toFixed(3)}">`,
    ...cases.map((c) => caseXml(c, name)),
    '  </testsuite>',
  ].join('\n');
}

export default async function* junit(source) {
  const pending = new Map(); // nesting -> finished tests/suites waiting for their parent
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') {
      continue;
    }
    const d = event.data;
    const node = {
      name: d.name,
      failed: event.type === 'test:fail',
      skip: d.skip !== undefined && d.skip !== false,
      todo: d.todo !== undefined && d.todo !== false,
      details: d.details,
      children: pending.get(d.nesting + 1) ?? [],
    };
    pending.delete(d.nesting + 1);
    if (!pending.has(d.nesting)) {
      pending.set(d.nesting, []);
    }
    pending.get(d.nesting).push(node);
  }
  const top = pending.get(0) ?? [];
  const suites = [];
  const loose = [];
  // Nested suites become name prefixes: `inner > test`.
  const flatten = (node, prefix) => {
    const name = prefix ? `${prefix} > ${node.name}` : node.name;
    return node.children.length === 0
      ? [{ ...node, name }]
      : node.children.flatMap((c) => flatten(c, name));
  };
  for (const node of top) {
    if (node.children.length > 0) {
      suites.push(suiteXml(node.name, node.children.flatMap((c) => flatten(c, ''))));
    } else {
      loose.push(node);
    }
  }
  if (loose.length > 0) {
    suites.push(suiteXml('tests', loose));
  }
  yield `<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n${suites.join('\n')}\n</testsuites>\n`;
}
