// guacamole-lite on a loopback port, relaying to the guacd given on the command line, for
// bench/tunnel.sh: `node server.js <guacd-port>`. Prints one line, `LISTENING <port> <token>`,
// where the token is the AES-256-CBC JSON guacamole-lite's README describes (a VNC connection;
// the double only checks the handshake's shape).
'use strict';
const crypto = require('crypto');
const http = require('http');
const GuacamoleLite = require('guacamole-lite');

const guacdPort = Number(process.argv[2]);
const key = crypto.randomBytes(32);

function token(settings) {
    const iv = crypto.randomBytes(16);
    const cipher = crypto.createCipheriv('AES-256-CBC', key, iv);
    const value = Buffer.concat([cipher.update(JSON.stringify(settings), 'utf8'), cipher.final()]);
    const sealed = JSON.stringify({ iv: iv.toString('base64'), value: value.toString('base64') });
    return Buffer.from(sealed).toString('base64');
}

const server = http.createServer();
// eslint-disable-next-line no-new
new GuacamoleLite(
    { server },
    { host: '127.0.0.1', port: guacdPort },
    {
        crypt: { cypher: 'AES-256-CBC', key },
        log: { level: 'ERRORS' },
        // The gateway gives a quiet browser 120 s; the same here, so idle tunnels stay open.
        maxInactivityTime: 120000,
    },
);
server.listen(0, '127.0.0.1', () => {
    const t = token({
        connection: {
            type: 'vnc',
            settings: { hostname: '127.0.0.1', port: '5901', password: 'bench', width: 1280, height: 720, dpi: 96 },
        },
    });
    process.stdout.write(`LISTENING ${server.address().port} ${t}\n`);
});
