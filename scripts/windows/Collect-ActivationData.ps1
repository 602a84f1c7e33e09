<#
.SYNOPSIS
  Writes this machine's MAK proxy activation data into a makproxy drop folder.

.DESCRIPTION
  Reads SoftwareLicensingProduct (and OfficeSoftwareProtectionProduct where present,
  for Office 2010 on Windows 7) for every product with a partial product key and writes
  <COMPUTERNAME>.json (schema makproxy-agent/1) into -DropFolder. The file is written to
  a temporary name and then renamed, so makproxy-secure collect never reads half a file.
  Needs no modules; runs on Windows PowerShell 5.1 (and 3.0+). Run it by hand, as a GPO
  startup script or as a scheduled task. No administrator rights are needed to read.

.EXAMPLE
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File Collect-ActivationData.ps1 -DropFolder \\fileserver\makproxy\drop
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$DropFolder
)
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Get-LicensingProducts([string]$Class) {
    try {
        @(Get-WmiObject -Class $Class -Filter 'PartialProductKey IS NOT NULL' -ErrorAction Stop)
    } catch {
        @()   # OfficeSoftwareProtectionProduct exists only where Office 2010 is installed
    }
}

$products = @()
foreach ($class in @('SoftwareLicensingProduct', 'OfficeSoftwareProtectionProduct')) {
    foreach ($p in (Get-LicensingProducts $class)) {
        $products += [ordered]@{
            wmi_class           = $class
            activation_id       = [string]$p.ID
            application_id      = [string]$p.ApplicationID
            name                = [string]$p.Name
            description         = [string]$p.Description
            partial_product_key = [string]$p.PartialProductKey
            extended_product_id = [string]$p.ProductKeyID
            installation_id     = [string]$p.OfflineInstallationId
            license_status      = [int]$p.LicenseStatus
        }
    }
}

$doc = [ordered]@{
    schema    = 'makproxy-agent/1'
    host      = $env:COMPUTERNAME
    collected = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
    agent     = 'Collect-ActivationData.ps1 1.0'
    products  = @($products)
}
$json = ConvertTo-Json -InputObject $doc -Depth 4

$final = Join-Path $DropFolder ($env:COMPUTERNAME + '.json')
$tmp = Join-Path $DropFolder ('.' + $env:COMPUTERNAME + '.' + [guid]::NewGuid().ToString('N') + '.tmp')
[System.IO.File]::WriteAllText($tmp, $json, (New-Object System.Text.UTF8Encoding($false)))
if (Test-Path -LiteralPath $final) {
    [System.IO.File]::Replace($tmp, $final, [NullString]::Value)
} else {
    [System.IO.File]::Move($tmp, $final)
}
Write-Host ("Wrote {0} product(s) to {1}" -f $products.Count, $final)
