"""Signed attestations on an image in a registry: keys, DSSE envelopes, the statements, OCI storage.

`mlenv attest` verifies an image against its lock, signs three in-toto Statements (SLSA provenance,
mlenv's verify verdict, the CycloneDX SBOM) with the team's key and attaches each to the image's digest
as an OCI 1.1 artifact. `mlenv verify --attestation` finds them again and checks them. Each module does
one job: keys (cosign's key files), dsse (envelopes), statements (what is signed), referrers (where it is
stored), check (what a deploy gate asks).
"""
