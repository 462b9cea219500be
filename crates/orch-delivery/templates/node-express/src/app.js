'use strict';

const express = require('express');

const SERVICE_NAME = '{{ name }}';

const app = express();

// Liveness: the process is up and serving requests.
app.get('/health', (req, res) => {
  res.json({ status: 'ok', service: SERVICE_NAME });
});

module.exports = { app, SERVICE_NAME };
