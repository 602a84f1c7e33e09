#!/usr/bin/env python3
"""Writes the hand-shaped fixtures in fixtures/drop and fixtures/drop-broken: raw WMI
JSON (UTF-16LE and UTF-8 with BOM), the agent's Windows 7 / Office 2010 form, CSV, and
broken files. The agent-format PC-*.json files come from `makproxy-gen --seed fixtures`.
Run from the repository root; the output is committed."""
import hashlib, json, os

def check(body):
    return str(sum(int(d) * (1 if i % 2 == 0 else 2) for i, d in enumerate(body)) % 7)

def digits(seed, n):
    out, c = "", 0
    while len(out) < n:
        out += "".join(str(b % 10) for b in hashlib.sha256(f"{seed}{c}".encode()).digest() if b < 250)
        c += 1
    return out[:n]

def iid(seed):
    p = digits(seed, 54)
    return "".join(p[i:i + 6] + check(p[i:i + 6]) for i in range(0, 54, 6))

def spaced(s, g):
    return " ".join(s[i:i + g] for i in range(0, len(s), g))

WIN = "55c92734-d682-4d71-983e-d6ec3f16059f"
OFF = "0ff1ce15-a989-479d-af46-f275c6370663"
EPID = "03612-03305-317-008912-02-1033-9200.0000-0662023"

def wmi(host, aid, name, desc, key, iid_, status, app=WIN, epid=EPID):
    return {"PSComputerName": host, "ID": aid, "ApplicationID": app, "Name": name, "Description": desc,
            "PartialProductKey": key, "ProductKeyID": epid, "OfflineInstallationId": iid_,
            "LicenseStatus": status, "GracePeriodRemaining": 43200, "CimClass": {"CimClassName": "SoftwareLicensingProduct"}}

os.makedirs("fixtures/drop", exist_ok=True)
os.makedirs("fixtures/drop-broken", exist_ok=True)

# PowerShell 5.1 `ConvertTo-Json > LAB-07.json`: a single object, UTF-16LE with BOM.
one = wmi("LAB-07", "{2DE67392-B7A7-462A-B1CA-108DD189F588}", "Windows(R), Professional edition",
          "Windows(R) Operating System, VOLUME_MAK channel", "3V66T", iid("lab07"), 5)
with open("fixtures/drop/LAB-07.json", "wb") as f:
    f.write(b"\xff\xfe" + json.dumps(one, indent=4).replace("\n", "\r\n").encode("utf-16-le"))

# An array, UTF-8 with BOM, no PSComputerName (host from the file name), with products
# that are recorded but not queued: KMS client, no key installed, already licensed.
arr = [
    wmi(None, "2de67392-b7a7-462a-b1ca-108dd189f588", "Windows(R), Professional edition",
        "Windows(R) Operating System, VOLUME_MAK channel", "3V66T", iid("lab08"), 2),
    wmi(None, "d450596f-894d-49e0-966a-fd39ed4c4c64", "Office 16, Office16ProPlusVL_KMS_Client edition",
        "Office 16, VOLUME_KMSCLIENT channel", "WFG99", iid("lab08-office"), 5, app=OFF,
        epid="05426-00206-434-012345-03-1033-9600.0000-1512019"),
    wmi(None, "5e017a8a-f3f9-4167-b1bd-ba3e236a4d8f", "Windows(R), ServerStandard edition",
        "Windows(R) Operating System, RETAIL channel", None, "", 0),
]
for a in arr:
    del a["PSComputerName"]
with open("fixtures/drop/LAB-08.json", "wb") as f:
    f.write(b"\xef\xbb\xbf" + json.dumps(arr, indent=4).encode())

# The agent's form for Office 2010 on Windows 7 (OfficeSoftwareProtectionProduct), IID with spaces.
agent = {"schema": "makproxy-agent/1", "host": "WIN7-OFFICE", "collected": "2026-11-20T09:30:00Z",
         "agent": "Collect-ActivationData.ps1 1.0",
         "products": [{"wmi_class": "OfficeSoftwareProtectionProduct", "activation_id": "6f327760-8c5c-417c-9b61-836a98287e0c",
                       "application_id": "59a52881-a989-479d-af46-f275c6370663", "name": "Office 14, OfficeProPlus-MAK edition",
                       "description": "Office 14, VOLUME_MAK channel", "partial_product_key": "H3GVB",
                       "extended_product_id": "82503-00285-143-601553-03-1033-7601.0000-2252010",
                       "installation_id": spaced(iid("win7-office"), 7), "license_status": 5}]}
with open("fixtures/drop/WIN7-OFFICE.json", "w", newline="\r\n") as f:
    json.dump(agent, f, indent=2)

with open("fixtures/drop/inventory.csv", "w", newline="") as f:
    f.write("host,activation_id,extended_product_id,installation_id,product\r\n")
    for h in ("KIOSK-01", "KIOSK-02"):
        f.write(f'{h},2de67392-b7a7-462a-b1ca-108dd189f588,{EPID},"{spaced(iid(h), 7)}","Windows(R), Professional edition"\r\n')

# Broken inputs: each file name says what is wrong. A case whose file must be named
# after its host (a machine's file speaks only for that host) sits in a folder named
# after the case instead.
good = {"activation_id": "2de67392-b7a7-462a-b1ca-108dd189f588", "partial_product_key": "3V66T",
        "extended_product_id": EPID, "installation_id": iid("broken-good"), "license_status": 5,
        "description": "VOLUME_MAK"}
typo = dict(good, activation_id="85dd8b5f-eaa4-4af3-a628-cce9e77c9a03",
            installation_id=iid("broken-typo")[:15] + str((int(iid("broken-typo")[15]) + 1) % 10) + iid("broken-typo")[16:])
def agent_doc(host, products):
    return {"schema": "makproxy-agent/1", "host": host, "collected": "2026-11-20T10:00:00Z", "agent": "fixture", "products": products}
files = {
    "bad-check-digit-in-one-product/GOOD-AND-BAD.json": json.dumps(agent_doc("GOOD-AND-BAD", [good, typo]), indent=2),
    "claims-another-host/SPOOFER.json": json.dumps(agent_doc("VICTIM-01", [good])),
    "truncated.json": json.dumps(agent_doc("TRUNC", [good]))[:120],
    "duplicate-key.json": '{"schema": "makproxy-agent/1", "host": "A", "host": "B", "products": []}',
    "unknown-schema.json": json.dumps(dict(agent_doc("FUTURE", [good]), schema="makproxy-agent/9")),
    "not-machine-records.json": json.dumps({"hello": "world"}),
    "bidi-override-host.json": json.dumps(agent_doc("PC\u202e1gpj.exe", [good])),
    "deeply-nested.json": "[" * 500 + "]" * 500,
}
for name, text in files.items():
    os.makedirs(os.path.dirname(f"fixtures/drop-broken/{name}"), exist_ok=True)
    with open(f"fixtures/drop-broken/{name}", "w") as f:
        f.write(text)
with open("fixtures/drop-broken/utf16-odd-length.json", "wb") as f:
    f.write(b"\xff\xfe" + '{"a": 1}'.encode("utf-16-le") + b"\x00")

# Windows 10 Extended Security Updates (fixtures/esu): the OS product, licensed, and
# ESU add-ons, each its own SoftwareLicensingProduct instance (Windows application, MAK)
# with its own key, IID and ePID, unlicensed until its CID is deposited. The activation
# IDs are Microsoft's published Year 1 and Year 2 IDs; names and descriptions are shaped
# as `slmgr /dlv` and public ESU tooling show them (not captured from a real machine).
# Raw `Get-CimInstance SoftwareLicensingProduct | ConvertTo-Json` output, UTF-8 with BOM.
ESU = {1: "f520e45e-7413-4a34-a497-d2765967d094", 2: "1043add5-23b1-4afb-9a0f-64343c8f3f8d"}
ESU_EDITIONS = "Education,EducationN,Enterprise,EnterpriseN,Professional,ProfessionalEducation,ProfessionalEducationN,ProfessionalN,ProfessionalWorkstation,ProfessionalWorkstationN"
os.makedirs("fixtures/esu", exist_ok=True)
for host, years in (("WIN10-ESU-01", (1, 2)), ("WIN10-ESU-02", (1,))):
    items = [wmi(host, "73111121-5638-40f6-bc11-f1d7b0d64300", "Windows(R), Enterprise edition",
                 "Windows(R) Operating System, VOLUME_MAK channel", "T83GX", iid(host + "-os"), 1)]
    for y in years:
        items.append(wmi(host, ESU[y], f"Windows(R), Client-ESU-Year{y} add-on for {ESU_EDITIONS}",
                         "Windows(R) Operating System, VOLUME_MAK channel", f"ESUY{y}", iid(f"{host}-esu{y}"), 0,
                         epid=f"03612-0372{y}-000-00001{y}-03-1033-19041.0000-3102025"))
    with open(f"fixtures/esu/{host}.json", "wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps(items, indent=4).replace("\n", "\r\n").encode())
# Eligible but not keyed: the prerequisite update put the Year 1 add-on's license on the
# machine, nobody has installed an ESU key for it (no key, no IID, no ePID).
items = [wmi("WIN10-ESU-03", "73111121-5638-40f6-bc11-f1d7b0d64300", "Windows(R), Enterprise edition",
             "Windows(R) Operating System, VOLUME_MAK channel", "T83GX", iid("WIN10-ESU-03-os"), 1),
         wmi("WIN10-ESU-03", ESU[1], f"Windows(R), Client-ESU-Year1 add-on for {ESU_EDITIONS}",
             "Windows(R) Operating System, VOLUME_MAK channel", None, None, 0, epid=None)]
with open("fixtures/esu/WIN10-ESU-03.json", "wb") as f:
    f.write(b"\xef\xbb\xbf" + json.dumps(items, indent=4).replace("\n", "\r\n").encode())
# The same as Collect-ActivationData.ps1 2.1 writes it: the keyed OS product and the
# Year 1 license it reports although no key is installed (empty key, ePID and IID).
doc = {"schema": "makproxy-agent/1", "host": "WIN10-ESU-04", "collected": "2026-11-20T10:00:00Z",
       "agent": "Collect-ActivationData.ps1 2.1", "products": [
           {"wmi_class": "SoftwareLicensingProduct", "activation_id": "73111121-5638-40f6-bc11-f1d7b0d64300",
            "application_id": WIN, "name": "Windows(R), Enterprise edition",
            "description": "Windows(R) Operating System, VOLUME_MAK channel", "partial_product_key": "T83GX",
            "extended_product_id": EPID, "installation_id": iid("WIN10-ESU-04-os"), "license_status": 1,
            "product_key_channel": "Volume:MAK"},
           {"wmi_class": "SoftwareLicensingProduct", "activation_id": ESU[1], "application_id": WIN,
            "name": f"Windows(R), Client-ESU-Year1 add-on for {ESU_EDITIONS}",
            "description": "Windows(R) Operating System, VOLUME_MAK channel", "partial_product_key": "",
            "extended_product_id": "", "installation_id": "", "license_status": 0}]}
with open("fixtures/esu/WIN10-ESU-04.json", "w", newline="\r\n") as f:
    json.dump(doc, f, indent=2)
