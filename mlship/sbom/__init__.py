"""Software bills of materials (docs/BUNDLE.md "SBOM"): what a bundle, an image or an on-prem tarball is made of,
as CycloneDX 1.6 and SPDX 2.3 JSON, written with CycloneDX's and SPDX's own libraries; and the license gate.

packages.py reads what a Python distribution says about itself (a wheel's METADATA, an installed distribution,
a dpkg status file); licenses.py turns its license metadata into an SPDX expression and applies --deny-licenses;
document.py writes the two formats; artifacts.py says what goes into each artifact and reads it back out.
Build-time only: nothing here is imported by the runtime.
"""
