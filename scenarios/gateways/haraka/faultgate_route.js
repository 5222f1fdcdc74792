// faultgate_route - the routing of scenarios/gateways/haraka.yaml: every
// connection from loopback relays, every recipient is accepted, and every
// message goes through Haraka's outbound queue (store and forward, with
// its retries) to the one next hop of faultgate_route.ini: the proxy.
'use strict'

exports.register = function () {
    this.cfg = this.config.get('faultgate_route.ini').main
}

exports.hook_connect_init = function (next, connection) {
    if (connection.remote.ip === '127.0.0.1') connection.relaying = true
    next()
}

exports.hook_rcpt = function (next, connection) {
    if (connection.relaying) return next(OK)
    next(DENY, 'relaying denied')
}

exports.hook_get_mx = function (next, hmail, domain) {
    next(OK, { priority: 0, exchange: this.cfg.host, port: Number(this.cfg.port) })
}
