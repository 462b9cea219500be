'use strict';

const { app } = require('./app');

const port = Number(process.env.PORT || {{ port }});

const server = app.listen(port, () => {
  console.log(`{{ name }} listening on port ${port}`);
});

function shutdown() {
  server.close(() => process.exit(0));
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
