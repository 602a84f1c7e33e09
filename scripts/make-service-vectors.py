#!/usr/bin/env python3
"""Writes fixtures/service/known-answers.json: BatchActivation inner requests and their
digests computed here, with Python's own hmac and UTF-16 codec, from the published
protocol (docs: ../shared/reference/batchactivation.md; the ActivationWs project), so
the Rust client and the loopback mock are checked against an implementation that
shares no code with either. Run from the repository root; the file is committed."""
import base64, hashlib, hmac, json

# The public MAC key every BatchActivation client uses (ActivationWs declares it as 64
# bytes with 32 trailing zeros; HMAC pads the key with zeros, so the digest is the same).
KEY = bytes.fromhex("fe319875fb4884869cf3f1ce99a89064ab571fca470450583024e214628779a0")
NS = "http://www.microsoft.com/DRM/SL/BatchActivationRequest/1.0"
PID = "03612-03305-317-008912-02-1033-9200.0000-0662023"
IID = "123456712345671234567123456712345671234567123456712345671234567"

out = []
for rtype, iid in [(1, IID), (2, None)]:
    body = f"<PID>{PID}</PID>" + (f"<IID>{iid}</IID>" if iid else "")
    xml = (f'<ActivationRequest xmlns="{NS}"><VersionNumber>2.0</VersionNumber>'
           f"<RequestType>{rtype}</RequestType><Requests><Request>{body}</Request>"
           f"</Requests></ActivationRequest>")
    raw = xml.encode("utf-16-le")  # no BOM, no XML declaration
    digest = base64.b64encode(hmac.new(KEY, raw, hashlib.sha256).digest()).decode()
    assert digest == base64.b64encode(hmac.new(KEY + bytes(32), raw, hashlib.sha256).digest()).decode()
    out.append({"request_type": rtype, "pid": PID, "iid": iid, "request_xml": xml,
                "request_xml_utf16le_base64": base64.b64encode(raw).decode(), "digest": digest})

with open("fixtures/service/known-answers.json", "w") as f:
    json.dump({"source": "scripts/make-service-vectors.py (Python hmac, independent of makproxy)",
               "vectors": out}, f, indent=2)
    f.write("\n")
