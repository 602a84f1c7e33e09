<#
.SYNOPSIS
  Deposits the confirmation IDs makproxy-secure apply wrote for this machine, and
  reports the outcome back to the drop folder.

.DESCRIPTION
  Reads <COMPUTERNAME>.json (schema makproxy-deposit/1) from -DepositFolder. For each
  product: checks the installation ID is still the one the CID answers, calls
  DepositOfflineConfirmationId, refreshes the license status and checks LicenseStatus = 1.
  Writes <COMPUTERNAME>.result.json (schema makproxy-deposit-result/1) into
  -ResultFolder (default: the drop folder collect reads), atomically. Run elevated.
  Refuses simulated CIDs unless -AllowSimulated (drills).

.EXAMPLE
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File Deposit-ConfirmationId.ps1 -DepositFolder \\fileserver\makproxy\deposit -ResultFolder \\fileserver\makproxy\drop
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$DepositFolder,
    [Parameter(Mandatory = $true)][string]$ResultFolder,
    [switch]$AllowSimulated
)
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$file = Join-Path $DepositFolder ($env:COMPUTERNAME + '.json')
if (-not (Test-Path -LiteralPath $file)) {
    Write-Host "No deposit file for $env:COMPUTERNAME in $DepositFolder"
    exit 0
}
$doc = Get-Content -LiteralPath $file -Raw -Encoding UTF8 | ConvertFrom-Json
if ($doc.schema -ne 'makproxy-deposit/1') { throw "Unsupported deposit file schema '$($doc.schema)'" }
if ($doc.host -ne $env:COMPUTERNAME) { throw "Deposit file is for '$($doc.host)', not $env:COMPUTERNAME" }
if ($doc.simulated -and -not $AllowSimulated) {
    throw 'This deposit file holds SIMULATED confirmation IDs; they cannot activate anything. Use -AllowSimulated only for drills.'
}

function Get-ErrorCode($err) {
    $text = $err.Exception.ToString()
    if ($text -match '0x[0-9A-Fa-f]{8}') { return $Matches[0].ToUpper().Replace('0X', '0x') }
    return ('0x{0:X8}' -f $err.Exception.HResult)
}

$results = @()
foreach ($p in @($doc.products)) {
    $entry = [ordered]@{
        activation_id   = $p.activation_id
        installation_id = $p.installation_id
        confirmation_id = $p.confirmation_id
        status          = 'failed'
        error_code      = $null
        message         = $null
        license_status  = $null
    }
    try {
        # Values come from a file on a share: accept only their exact shapes.
        if ($p.confirmation_id -notmatch '^\d{48}$' -or $p.installation_id -notmatch '^(\d{63}|\d{54})$' -or $p.activation_id -notmatch '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') {
            throw 'Deposit file entry is malformed'
        }
        $class = if ($p.wmi_class -eq 'OfficeSoftwareProtectionProduct') { 'OfficeSoftwareProtectionProduct' } else { 'SoftwareLicensingProduct' }
        $service = if ($class -eq 'OfficeSoftwareProtectionProduct') { 'OfficeSoftwareProtectionService' } else { 'SoftwareLicensingService' }
        $product = Get-WmiObject -Class $class -Filter ("ID='{0}'" -f $p.activation_id)
        if ($null -eq $product) { throw "Product $($p.activation_id) is not installed" }
        if ($product.OfflineInstallationId -ne $p.installation_id) {
            $entry.error_code = '0xC004F031'
            throw 'The installation ID changed since collection (reimage, hardware or key change); collect again'
        }
        [void]$product.DepositOfflineConfirmationId($p.installation_id, $p.confirmation_id)
        [void](Get-WmiObject -Class $service).RefreshLicenseStatus()
        $product = Get-WmiObject -Class $class -Filter ("ID='{0}'" -f $p.activation_id)
        $entry.license_status = [int]$product.LicenseStatus
        if ($product.LicenseStatus -eq 1) { $entry.status = 'activated' } else { $entry.message = 'Deposited, but the product is not licensed yet' }
    } catch {
        if ($null -eq $entry.error_code -and $_.Exception.ToString() -match '0x[0-9A-Fa-f]{8}') { $entry.error_code = Get-ErrorCode $_ }
        if ($null -eq $entry.message) { $entry.message = $_.Exception.Message }
    }
    $results += $entry
    Write-Host ('{0}: {1} {2}' -f $p.activation_id, $entry.status, $entry.error_code)
}

$out = [ordered]@{
    schema  = 'makproxy-deposit-result/1'
    host    = $env:COMPUTERNAME
    time    = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
    results = @($results)
}
$json = ConvertTo-Json -InputObject $out -Depth 4
$final = Join-Path $ResultFolder ($env:COMPUTERNAME + '.result.json')
$tmp = Join-Path $ResultFolder ('.' + $env:COMPUTERNAME + '.' + [guid]::NewGuid().ToString('N') + '.tmp')
[System.IO.File]::WriteAllText($tmp, $json, (New-Object System.Text.UTF8Encoding($false)))
if (Test-Path -LiteralPath $final) { [System.IO.File]::Replace($tmp, $final, [NullString]::Value) } else { [System.IO.File]::Move($tmp, $final) }
