<#
.SYNOPSIS
  Writes this machine's MAK proxy activation data into a makproxy drop folder.

.DESCRIPTION
  Reads SoftwareLicensingProduct (and OfficeSoftwareProtectionProduct where present,
  for Office 2010 on Windows 7) for every product with a partial product key, plus the
  Windows 10 ESU add-on licenses that have none yet (so the secure side can say which
  eligible machines still need an ESU key installed), and writes
  <COMPUTERNAME>.json (schema makproxy-agent/1) into -DropFolder. The file is written to
  a temporary name and then renamed, so makproxy-secure collect never reads half a file.

  Runs on Windows PowerShell 2.0 to 5.1 and PowerShell 7 (Windows 7 SP1 / Server 2008 R2
  to Windows 11 / Server 2025): CIM where present, WMI otherwise, and JSON written by this
  script (PowerShell 2.0 has no ConvertTo-Json). Needs no modules and no administrator
  rights. Run it by hand, as a GPO startup script or as a SYSTEM scheduled task
  (docs/operator-guide.md, "Deploying the agents").

  Nothing fails silently:
  - licensing cannot be read (WMI broken, service stopped, access denied): the file is
    still written, with "error" saying why and no products; collect reports the host
    with MP-REC-013, and the script exits 1;
  - no product key at all: the file has no products and no error; status shows the
    host as skipped, no-key;
  - the drop folder cannot be written: the script exits 2 (see the log).
  Each run logs to <DropFolder>\logs\<COMPUTERNAME>.collect.log (kept under 256 KB, one
  older generation .1) and, where the machine lets it, to the Application event log
  (source makproxy). -WhatIf shows what would be written and writes nothing.

  -AdForest -ProductKey KEY (on a domain controller, or a member with rights on the
  forest's Activation Objects container; Windows 8 / Server 2012 and later) also records
  the installation ID of an Active Directory forest activation with that KMS host key
  (slmgr /ad-activation-get-IID). The key itself is never written or logged: only its
  last five characters.

.EXAMPLE
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File Collect-ActivationData.ps1 -DropFolder \\fileserver\makproxy\drop

.EXAMPLE
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File Collect-ActivationData.ps1 -DropFolder \\fileserver\makproxy\drop -AdForest -ProductKey XXXXX-XXXXX-XXXXX-XXXXX-XXXXX
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)][string]$DropFolder,
    # Where the log goes (default: <DropFolder>\logs).
    [string]$LogFolder = '',
    # No log file (the event log is still written where allowed).
    [switch]$NoLog,
    # Also record an Active Directory forest activation with -ProductKey (a KMS host key).
    [switch]$AdForest,
    # The KMS host key for -AdForest (never written or logged).
    [string]$ProductKey = ''
)
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$AgentVersion = 'Collect-ActivationData.ps1 2.1'
$LogLimit = 262144
$EventId = 100   # Application event log: 100 collect, 200 deposit

function Write-AgentLog([string]$Level, [string]$Text) {
    $line = '{0} {1} {2}' -f (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ'), $Level, $Text
    Write-Verbose $line
    if ($script:LogFile) {
        try {
            if ((Test-Path -LiteralPath $script:LogFile) -and ((Get-Item -LiteralPath $script:LogFile).Length -gt $LogLimit)) {
                Move-Item -LiteralPath $script:LogFile -Destination ($script:LogFile + '.1') -Force
            }
            Add-Content -LiteralPath $script:LogFile -Value $line -Encoding UTF8
        } catch {
            $script:LogFile = $null   # a log that cannot be written never stops the agent
        }
    }
    try {
        if (-not [System.Diagnostics.EventLog]::SourceExists('makproxy')) {
            New-EventLog -LogName Application -Source makproxy
        }
        $type = if ($Level -eq 'ERROR') { 'Error' } elseif ($Level -eq 'WARN') { 'Warning' } else { 'Information' }
        Write-EventLog -LogName Application -Source makproxy -EventId $EventId -EntryType $type -Message $Text
    } catch {
        # Not allowed here (not elevated, or no event log): the file log is enough.
    }
}

# JSON text of a string, number, boolean, null, array or dictionary (keys in order).
function ConvertTo-AgentJson($Value, [string]$Indent = '') {
    if ($null -eq $Value) { return 'null' }
    if ($Value -is [bool]) { if ($Value) { return 'true' } else { return 'false' } }
    if ($Value -is [int] -or $Value -is [long] -or $Value -is [uint32]) { return [string]$Value }
    if ($Value -is [string]) {
        $sb = New-Object System.Text.StringBuilder
        [void]$sb.Append('"')
        foreach ($c in $Value.ToCharArray()) {
            $n = [int]$c
            if ($c -eq '"') { [void]$sb.Append('\"') }
            elseif ($c -eq '\') { [void]$sb.Append('\\') }
            elseif ($n -lt 32 -or $n -eq 127 -or ($n -ge 0x2028 -and $n -le 0x2029)) { [void]$sb.Append(('\u{0:x4}' -f $n)) }
            else { [void]$sb.Append($c) }
        }
        [void]$sb.Append('"')
        return $sb.ToString()
    }
    $inner = $Indent + '  '
    if ($Value -is [System.Collections.IDictionary]) {
        $parts = @()
        foreach ($k in $Value.Keys) { $parts += ($inner + (ConvertTo-AgentJson ([string]$k)) + ': ' + (ConvertTo-AgentJson $Value[$k] $inner)) }
        if ($parts.Count -eq 0) { return '{}' }
        return "{`n" + ($parts -join ",`n") + "`n" + $Indent + '}'
    }
    $items = @()
    foreach ($v in @($Value)) { $items += ($inner + (ConvertTo-AgentJson $v $inner)) }
    if ($items.Count -eq 0) { return '[]' }
    return "[`n" + ($items -join ",`n") + "`n" + $Indent + ']'
}

# The Windows error code of an exception (0x8004100E …), or $null.
function Get-AgentErrorCode($Exception) {
    $e = $Exception
    while ($null -ne $e) {
        if ($e.ToString() -match '0x[0-9A-Fa-f]{8}') { return '0x' + $Matches[0].Substring(2).ToUpper() }
        $p = $e.GetType().GetProperty('ErrorCode')
        if ($null -ne $p) {
            $v = $p.GetValue($e, $null)
            if ($v -is [int]) { return ('0x{0:X8}' -f $v) }
        }
        $e = $e.InnerException
    }
    return $null
}

# Licensing products of one class that match a WQL filter. CIM where the cmdlets exist
# (PowerShell 3.0 and later; PowerShell 7 has nothing else), WMI otherwise. A class
# that does not exist (OfficeSoftwareProtectionProduct without Office 2010) is no error.
function Get-LicensingProducts([string]$Class, [bool]$Optional, [string]$Filter) {
    try {
        if ($PSVersionTable.PSVersion.Major -ge 3) {
            return @(Get-CimInstanceV3 $Class $Filter)
        }
        return @(Get-WmiObject -Class $Class -Filter $Filter -ErrorAction Stop)
    } catch {
        $code = Get-AgentErrorCode $_.Exception
        if ($Optional -and ($code -eq '0x80041010' -or $_.Exception.ToString() -match 'Invalid class|not found')) {
            return @()
        }
        throw
    }
}

function Get-CimInstanceV3([string]$Class, [string]$Filter) {
    Get-CimInstance -ClassName $Class -Filter $Filter -ErrorAction Stop
}

function New-Ordered { New-Object System.Collections.Specialized.OrderedDictionary }

# A field of a parsed JSON object, whichever reader made it ($null when absent).
function Get-Field($Object, [string]$Name) {
    if ($null -eq $Object) { return $null }
    if ($Object -is [System.Collections.IDictionary]) {
        # .Keys, not .Contains: JavaScriptSerializer's Dictionary has Contains only as an
        # explicit interface method, which PowerShell 2.0 cannot call.
        if ($Object.Keys -contains $Name) { return $Object[$Name] }
        return $null
    }
    $p = $Object.PSObject.Properties[$Name]
    if ($null -eq $p) { return $null }
    return $p.Value
}

# The installation ID of an Active Directory forest's activation with this KMS host
# key (slmgr /ad-activation-get-IID). Windows 8 / Server 2012 and later.
function Get-AdForestInstallationId([string]$Key) {
    if ($PSVersionTable.PSVersion.Major -ge 3) { return Get-AdForestInstallationIdV3 $Key }
    $svc = Get-WmiObject -Class SoftwareLicensingService -ErrorAction Stop
    $r = $svc.GenerateActiveDirectoryOfflineActivationId($Key)
    if ($null -ne $r -and $r.ReturnValue -ne 0) { throw ('GenerateActiveDirectoryOfflineActivationId returned 0x{0:X8}' -f [uint32]$r.ReturnValue) }
    return [string]$r.InstallationID
}

function Get-AdForestInstallationIdV3([string]$Key) {
    $svc = Get-CimInstance -ClassName SoftwareLicensingService -ErrorAction Stop
    $r = Invoke-CimMethod -InputObject $svc -MethodName GenerateActiveDirectoryOfflineActivationId -Arguments @{ ProductKey = $Key } -ErrorAction Stop
    if ($null -ne $r -and $r.ReturnValue -ne 0) { throw ('GenerateActiveDirectoryOfflineActivationId returned 0x{0:X8}' -f [uint32]$r.ReturnValue) }
    return [string]$r.InstallationID
}

# Whether $Key is a whole product key: five groups of five letters or digits.
function Test-ProductKey([string]$Key) {
    return $Key -match '^[A-Za-z0-9]{5}(-[A-Za-z0-9]{5}){4}$'
}

$script:LogFile = $null
if ($LogFolder -eq '') { $LogFolder = Join-Path $DropFolder 'logs' }
if (-not $NoLog) {
    try {
        if (-not (Test-Path -LiteralPath $LogFolder)) { [void](New-Item -ItemType Directory -Path $LogFolder) }
        $script:LogFile = Join-Path $LogFolder ($env:COMPUTERNAME + '.collect.log')
    } catch {
        $script:LogFile = $null
    }
}
Write-AgentLog 'INFO' ("{0} on PowerShell {1}: collecting into {2}" -f $AgentVersion, $PSVersionTable.PSVersion, $DropFolder)

$products = @()
$failure = $null
try {
    # Every product with a key; and the Windows 10 ESU add-on licenses (Years 1-3,
    # Microsoft's IDs) that the prerequisite update put on the machine but that have no
    # ESU key installed yet: reported without key, collect counts them as "without an
    # ESU key installed".
    $keyed = 'PartialProductKey IS NOT NULL'
    $esuUnkeyed = "PartialProductKey IS NULL AND (ID = 'f520e45e-7413-4a34-a497-d2765967d094' OR ID = '1043add5-23b1-4afb-9a0f-64343c8f3f8d' OR ID = '83d49986-add3-41d7-ba33-87c7bfb5c0fb')"
    # (class, filter, class may be missing, best effort): the keyless ESU query is
    # extra information, so its failure is logged and never costs the keyed products.
    $queries = @(
        ('SoftwareLicensingProduct', $keyed, $false, $false),
        ('SoftwareLicensingProduct', $esuUnkeyed, $false, $true),
        ('OfficeSoftwareProtectionProduct', $keyed, $true, $false))
    foreach ($q in $queries) {
        $class = $q[0]
        $found = @()
        if ($q[3]) {
            try {
                $found = @(Get-LicensingProducts $class $q[2] $q[1])
            } catch {
                Write-AgentLog 'WARN' ("cannot list ESU add-on licenses without a key: {0}" -f $_.Exception.Message)
            }
        } else {
            $found = @(Get-LicensingProducts $class $q[2] $q[1])
        }
        # @(): on PowerShell 2.0, foreach over a call that output nothing runs once with $null.
        foreach ($p in $found) {
            $r = New-Ordered
            $r['wmi_class'] = $class
            $r['activation_id'] = [string]$p.ID
            $r['application_id'] = [string]$p.ApplicationID
            $r['name'] = [string]$p.Name
            $r['description'] = [string]$p.Description
            $r['partial_product_key'] = [string]$p.PartialProductKey
            $r['extended_product_id'] = [string]$p.ProductKeyID
            $r['installation_id'] = [string]$p.OfflineInstallationId
            $r['license_status'] = [int]$p.LicenseStatus
            # Windows 8 and later name the key's channel (Volume:MAK, Volume:CSVLK …).
            $channel = Get-Field $p 'ProductKeyChannel'
            if ($null -ne $channel -and [string]$channel -ne '') { $r['product_key_channel'] = [string]$channel }
            $products += $r
        }
    }
    if ($AdForest) {
        if (-not (Test-ProductKey $ProductKey)) { throw '-AdForest needs -ProductKey: the KMS host key, five groups of five letters or digits' }
        $last5 = $ProductKey.Substring(24).ToUpper()
        $r = New-Ordered
        $r['wmi_class'] = 'ActiveDirectoryActivation'
        $r['name'] = 'Active Directory forest activation'
        $r['partial_product_key'] = $last5
        $r['installation_id'] = Get-AdForestInstallationId $ProductKey
        $r['product_key_channel'] = 'Volume:CSVLK'
        $products += $r
        Write-AgentLog 'INFO' ("recorded the forest's installation ID for the KMS host key ending {0}" -f $last5)
    }
} catch {
    $failure = New-Ordered
    $failure['message'] = [string]$_.Exception.Message
    $failure['code'] = Get-AgentErrorCode $_.Exception
    $products = @()
    Write-AgentLog 'ERROR' ("cannot read licensing: {0} {1}" -f $failure['code'], $failure['message'])
}

$doc = New-Ordered
$doc['schema'] = 'makproxy-agent/1'
$doc['host'] = $env:COMPUTERNAME
$doc['collected'] = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
$doc['agent'] = $AgentVersion
$doc['products'] = $products
if ($null -ne $failure) { $doc['error'] = $failure }
$json = ConvertTo-AgentJson $doc

$final = Join-Path $DropFolder ($env:COMPUTERNAME + '.json')
if (-not $PSCmdlet.ShouldProcess($final, ('write {0} product(s)' -f $products.Count))) {
    Write-Output $json
    exit 0
}
try {
    $tmp = Join-Path $DropFolder ('.' + $env:COMPUTERNAME + '.' + [guid]::NewGuid().ToString('N') + '.tmp')
    [System.IO.File]::WriteAllText($tmp, $json, (New-Object System.Text.UTF8Encoding($false)))
    if (Test-Path -LiteralPath $final) {
        # File.Replace needs a backup name on .NET 2.0 (PowerShell 2.0 has no [NullString]).
        $bak = $tmp + '.bak'
        [System.IO.File]::Replace($tmp, $final, $bak)
        Remove-Item -LiteralPath $bak -Force -ErrorAction SilentlyContinue -WhatIf:$false
    } else {
        [System.IO.File]::Move($tmp, $final)
    }
} catch {
    Write-AgentLog 'ERROR' ("cannot write {0}: {1}" -f $final, $_.Exception.Message)
    Write-Error ("cannot write {0}: {1}" -f $final, $_.Exception.Message) -ErrorAction Continue
    exit 2
}
if ($null -ne $failure) {
    Write-Host ("Licensing could not be read ({0}); wrote the error to {1}" -f $failure['message'], $final)
    exit 1
}
Write-AgentLog 'INFO' ("wrote {0} product(s) to {1}" -f $products.Count, $final)
Write-Host ("Wrote {0} product(s) to {1}" -f $products.Count, $final)
exit 0
