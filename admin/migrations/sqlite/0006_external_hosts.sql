-- External hosts: vnc/rdp/ssh droplets with target 'external' (no container; the gateway's
-- guacd connects to the host itself). Same columns as ../postgres/0006_external_hosts.sql.
-- The host's password or SSH private key is in droplets.external_credentials, sealed with the
-- key file (AES-256-GCM, purpose "external-host-credentials:<droplet id>", key id in front):
-- never in clear in the database.

-- RDP: the Windows domain of the account; NULL = none.
ALTER TABLE droplets ADD COLUMN external_domain TEXT;
-- Further guacd connection parameters (JSON object of strings, e.g. {"security": "nla"}).
ALTER TABLE droplets ADD COLUMN external_params_json TEXT NOT NULL DEFAULT '{}';
