#!/usr/bin/env bash
# The Windows installer: both binaries under Program Files\makproxy, that folder on the
# system PATH, removed again by an uninstall. Built on Linux with wixl (msitools).
# Every GUID is derived from the version (product and package code) or fixed (upgrade
# code, components), and wixl and msibuild run at the commit's time (faketime,
# SOURCE_DATE_EPOCH), so a rebuild of the same release is the same file, byte for byte.
#   usage: scripts/msi.sh VERSION DIR-WITH-EXES OUT.msi
set -euo pipefail
VERSION=$1 BIN=$2 OUT=$3
guid() { /usr/bin/python3 -c "import uuid,sys; print(str(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1])).upper())" "$1"; }
EPOCH=${SOURCE_DATE_EPOCH:-0}
at() { TZ=UTC faketime -f "@$(TZ=UTC date -d "@$EPOCH" '+%Y-%m-%d %H:%M:%S')" "$@"; }
W=$(mktemp -d "${TMPDIR:-/tmp}/makproxy-msi.XXXXXX")
trap 'rm -rf "$W"' EXIT
cp "$BIN/makproxy-secure.exe" "$BIN/makproxy-online.exe" "$W/"
touch -d "@$EPOCH" "$W"/*.exe   # the cabinet records file times
cat > "$W/makproxy.wxs" <<WXS
<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="$(guid "makproxy:product:$VERSION")" Name="makproxy $VERSION" Language="1033"
           Version="$VERSION" Manufacturer="makproxy contributors"
           UpgradeCode="6B7E0F3A-2C4D-4E5F-8A9B-0C1D2E3F4A5B">
    <Package Id="$(guid "makproxy:package:$VERSION")" InstallerVersion="500" Compressed="yes"
             InstallScope="perMachine"
             Description="makproxy $VERSION: offline MAK proxy activation" Comments="https://github.com/makproxy"/>
    <MajorUpgrade DowngradeErrorMessage="A newer makproxy is already installed."/>
    <Media Id="1" Cabinet="makproxy.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="makproxy">
          <Component Id="Secure" Guid="1F0C6A52-8E0B-4C43-9B57-3A1D8F0E6C21" Win64="yes">
            <File Id="SecureExe" Name="makproxy-secure.exe" Source="makproxy-secure.exe" KeyPath="yes"/>
          </Component>
          <Component Id="Online" Guid="2A7D5B63-9F1C-4D54-8C68-4B2E9A1F7D32" Win64="yes">
            <File Id="OnlineExe" Name="makproxy-online.exe" Source="makproxy-online.exe" KeyPath="yes"/>
          </Component>
          <Component Id="Path" Guid="3B8E6C74-A02D-4E65-9D79-5C3FAB208E43" Win64="yes">
            <RegistryValue Root="HKLM" Key="Software\makproxy" Name="InstallDir" Type="string" Value="[INSTALLDIR]" KeyPath="yes"/>
          </Component>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Main" Title="makproxy" Level="1">
      <ComponentRef Id="Secure"/>
      <ComponentRef Id="Online"/>
      <ComponentRef Id="Path"/>
    </Feature>
  </Product>
</Wix>
WXS
(cd "$W" && at wixl --arch x64 -o makproxy.msi makproxy.wxs)
# wixl has no <Environment>: the PATH entry is added as the MSI tables themselves say it
# (Environment: "=-*PATH" = set at install, removed at uninstall, system-wide; "[~];"
# appends to the existing value), with the two standard actions scheduled.
printf 'Environment\tName\tValue\tComponent_\ns72\tl255\tL255\ts72\nEnvironment\tEnvironment\nPathEntry\t=-*PATH\t[~];[INSTALLDIR]\tPath\n' > "$W/Environment.idt"
(cd "$W" && msiinfo export makproxy.msi InstallExecuteSequence > InstallExecuteSequence.idt \
    && printf 'RemoveEnvironmentStrings\t\t3300\nWriteEnvironmentStrings\t\t5200\n' >> InstallExecuteSequence.idt \
    && at msibuild makproxy.msi -i Environment.idt && at msibuild makproxy.msi -i InstallExecuteSequence.idt \
    && at msibuild makproxy.msi -s "makproxy $VERSION" "makproxy contributors" "x64;1033" "{$(guid "makproxy:package:$VERSION")}")
cp "$W/makproxy.msi" "$OUT"
