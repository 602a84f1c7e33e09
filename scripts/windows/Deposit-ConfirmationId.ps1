<#
.SYNOPSIS
  Deposits the confirmation IDs makproxy-secure apply wrote for this machine, and
  reports the outcome back to the drop folder.

.DESCRIPTION
  Reads <COMPUTERNAME>.json (schema makproxy-deposit/1) from -DepositFolder. For each
  product: checks the installation ID is still the one the CID answers, skips a product
  that is already licensed under that installation ID, else calls
  DepositOfflineConfirmationId, refreshes the license status and checks LicenseStatus = 1.

  Always writes <COMPUTERNAME>.result.json (schema makproxy-deposit-result/1) into
  -ResultFolder (required: the drop folder collect reads), atomically - also when it
  refuses the whole file (another host's file, simulated CIDs, an unknown schema, a
  malformed file): then "refused" says why with a code, and collect reports it.

  Runs on Windows PowerShell 2.0 to 5.1 and PowerShell 7 (CIM where present, WMI
  otherwise). Run elevated. Refuses simulated CIDs unless -AllowSimulated (drills).
  Logs to <ResultFolder>\logs\<COMPUTERNAME>.deposit.log (under 256 KB, one older
  generation) and to the Application event log where allowed. -WhatIf deposits nothing
  and writes nothing.

  Exit codes: 0 every product activated (or already was); 1 some product failed;
  3 the file was refused; 2 the result could not be written.

  An Active Directory forest's activation (collected with -AdForest) is deposited with
  DepositActiveDirectoryOfflineActivationConfirmation (slmgr /ad-activation-apply-cid):
  give the KMS host key with -ProductKey (checked against the last five characters on
  record, never written or logged) and optionally -ActivationObjectName.

.EXAMPLE
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File Deposit-ConfirmationId.ps1 -DepositFolder \\fileserver\makproxy\deposit -ResultFolder \\fileserver\makproxy\drop
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)][string]$DepositFolder,
    [Parameter(Mandatory = $true)][string]$ResultFolder,
    [switch]$AllowSimulated,
    # Where the log goes (default: <ResultFolder>\logs).
    [string]$LogFolder = '',
    [switch]$NoLog,
    # The KMS host key, for an Active Directory forest's activation (never written or logged).
    [string]$ProductKey = '',
    # The Active Directory activation object's name (at most 40 characters; optional).
    [string]$ActivationObjectName = ''
)
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$LogLimit = 262144
$EventId = 200   # Application event log: 100 collect, 200 deposit

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

function New-Ordered { New-Object System.Collections.Specialized.OrderedDictionary }

# The deposit file as dictionaries and arrays: ConvertFrom-Json from PowerShell 3.0,
# .NET's JavaScriptSerializer (System.Web.Extensions, .NET 3.5) on PowerShell 2.0.
function Read-DepositFile([string]$Path) {
    $text = [System.IO.File]::ReadAllText($Path, [System.Text.Encoding]::UTF8)
    if ($PSVersionTable.PSVersion.Major -ge 3) { return ConvertFrom-JsonV3 $text }
    Add-Type -AssemblyName System.Web.Extensions
    $js = New-Object System.Web.Script.Serialization.JavaScriptSerializer
    return $js.DeserializeObject($text)
}

function ConvertFrom-JsonV3([string]$Text) {
    # -AsHashtable exists only from PowerShell 6; objects are read through Get-Field.
    ConvertFrom-Json -InputObject $Text
}

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

# Publishes the forest's activation object (slmgr /ad-activation-apply-cid).
function Send-AdConfirmation([string]$Key, [string]$Cid, [string]$Name) {
    if ($PSVersionTable.PSVersion.Major -ge 3) {
        Send-AdConfirmationV3 $Key $Cid $Name
        return
    }
    $svc = Get-WmiObject -Class SoftwareLicensingService -ErrorAction Stop
    $r = $svc.DepositActiveDirectoryOfflineActivationConfirmation($Key, $Cid, $Name)
    if ($null -ne $r -and $r.ReturnValue -ne 0) { throw ('DepositActiveDirectoryOfflineActivationConfirmation returned 0x{0:X8}' -f [uint32]$r.ReturnValue) }
}

function Send-AdConfirmationV3([string]$Key, [string]$Cid, [string]$Name) {
    $svc = Get-CimInstance -ClassName SoftwareLicensingService -ErrorAction Stop
    $r = Invoke-CimMethod -InputObject $svc -MethodName DepositActiveDirectoryOfflineActivationConfirmation -Arguments @{ ProductKey = $Key; ConfirmationID = $Cid; ActivationObjectName = $Name } -ErrorAction Stop
    if ($null -ne $r -and $r.ReturnValue -ne 0) { throw ('DepositActiveDirectoryOfflineActivationConfirmation returned 0x{0:X8}' -f [uint32]$r.ReturnValue) }
}

function Get-LicensingProduct([string]$Class, [string]$Id) {
    $filter = "ID='{0}'" -f $Id
    if ($PSVersionTable.PSVersion.Major -ge 3) { return Get-CimInstanceV3 $Class $filter }
    return Get-WmiObject -Class $Class -Filter $filter -ErrorAction Stop
}

function Get-CimInstanceV3([string]$Class, [string]$Filter) {
    Get-CimInstance -ClassName $Class -Filter $Filter -ErrorAction Stop
}

# Deposits the CID and refreshes the service's view of the license.
function Send-ConfirmationId($Product, [string]$Service, [string]$Iid, [string]$Cid) {
    if ($PSVersionTable.PSVersion.Major -ge 3) {
        Invoke-DepositV3 $Product $Service $Iid $Cid
        return
    }
    $r = $Product.DepositOfflineConfirmationId($Iid, $Cid)
    if ($null -ne $r -and $r.ReturnValue -ne 0) { throw ('DepositOfflineConfirmationId returned 0x{0:X8}' -f [uint32]$r.ReturnValue) }
    [void](Get-WmiObject -Class $Service -ErrorAction Stop).RefreshLicenseStatus()
}

function Invoke-DepositV3($Product, [string]$Service, [string]$Iid, [string]$Cid) {
    $r = Invoke-CimMethod -InputObject $Product -MethodName DepositOfflineConfirmationId -Arguments @{ InstallationId = $Iid; ConfirmationId = $Cid } -ErrorAction Stop
    if ($null -ne $r -and $r.ReturnValue -ne 0) { throw ('DepositOfflineConfirmationId returned 0x{0:X8}' -f [uint32]$r.ReturnValue) }
    $svc = Get-CimInstance -ClassName $Service -ErrorAction Stop
    [void](Invoke-CimMethod -InputObject $svc -MethodName RefreshLicenseStatus -ErrorAction Stop)
}

function Write-Result($Doc) {
    $json = ConvertTo-AgentJson $Doc
    $final = Join-Path $ResultFolder ($env:COMPUTERNAME + '.result.json')
    if (-not $PSCmdlet.ShouldProcess($final, 'write the deposit result')) {
        Write-Output $json
        return
    }
    try {
        $tmp = Join-Path $ResultFolder ('.' + $env:COMPUTERNAME + '.' + [guid]::NewGuid().ToString('N') + '.tmp')
        [System.IO.File]::WriteAllText($tmp, $json, (New-Object System.Text.UTF8Encoding($false)))
        if (Test-Path -LiteralPath $final) {
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
}

function New-ResultDoc {
    $d = New-Ordered
    $d['schema'] = 'makproxy-deposit-result/1'
    $d['host'] = $env:COMPUTERNAME
    $d['time'] = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
    $d['results'] = @()
    return $d
}

# Refuses the whole file: the result says why (collect reports it as MP-REC-014).
function Stop-Refused([string]$Code, [string]$Message) {
    Write-AgentLog 'ERROR' ("refused: {0}: {1}" -f $Code, $Message)
    $d = New-ResultDoc
    $r = New-Ordered
    $r['code'] = $Code
    $r['message'] = $Message
    $d['refused'] = $r
    Write-Result $d
    Write-Host ("Refused ({0}): {1}" -f $Code, $Message)
    exit 3
}

$script:LogFile = $null
if ($LogFolder -eq '') { $LogFolder = Join-Path $ResultFolder 'logs' }
if (-not $NoLog) {
    try {
        if (-not (Test-Path -LiteralPath $LogFolder)) { [void](New-Item -ItemType Directory -Path $LogFolder) }
        $script:LogFile = Join-Path $LogFolder ($env:COMPUTERNAME + '.deposit.log')
    } catch {
        $script:LogFile = $null
    }
}

$file = Join-Path $DepositFolder ($env:COMPUTERNAME + '.json')
if (-not (Test-Path -LiteralPath $file)) {
    Write-AgentLog 'INFO' "no deposit file for $env:COMPUTERNAME in $DepositFolder"
    Write-Host "No deposit file for $env:COMPUTERNAME in $DepositFolder"
    exit 0
}
try {
    $doc = Read-DepositFile $file
} catch {
    Stop-Refused 'malformed' ("cannot read {0}: {1}" -f $file, $_.Exception.Message)
}
$schema = [string](Get-Field $doc 'schema')
if ($schema -ne 'makproxy-deposit/1') { Stop-Refused 'unknown-schema' ("unsupported deposit file schema '{0}'" -f $schema) }
$target = [string](Get-Field $doc 'host')
if ($target -ne $env:COMPUTERNAME) { Stop-Refused 'wrong-host' ("the deposit file is for '{0}', not {1}" -f $target, $env:COMPUTERNAME) }
if ((Get-Field $doc 'simulated') -eq $true -and -not $AllowSimulated) {
    Stop-Refused 'simulated' 'the deposit file holds SIMULATED confirmation IDs; they cannot activate anything (use -AllowSimulated only for drills)'
}

$out = New-ResultDoc
$results = @()
$failed = 0
foreach ($p in @(Get-Field $doc 'products')) {
    $aid = [string](Get-Field $p 'activation_id')
    $iid = [string](Get-Field $p 'installation_id')
    $cid = [string](Get-Field $p 'confirmation_id')
    $entry = New-Ordered
    $entry['activation_id'] = $aid
    $entry['installation_id'] = $iid
    $entry['confirmation_id'] = $cid
    $entry['status'] = 'failed'
    $entry['error_code'] = $null
    $entry['message'] = $null
    $entry['license_status'] = $null
    try {
        # Values come from a file on a share: accept only their exact shapes.
        if ($cid -notmatch '^\d{48}$' -or $iid -notmatch '^(\d{63}|\d{54})$' -or $aid -notmatch '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') {
            throw 'Deposit file entry is malformed'
        }
        $wmiClass = [string](Get-Field $p 'wmi_class')
        if ($wmiClass -eq 'ActiveDirectoryActivation') {
            $last5 = [string](Get-Field $p 'partial_product_key')
            if (-not (Test-ProductKey $ProductKey) -or $ProductKey.Substring(24).ToUpper() -ne $last5.ToUpper()) {
                throw ("An Active Directory forest's activation needs -ProductKey: the KMS host key ending {0}" -f $last5)
            }
            if ($ActivationObjectName.Length -gt 40) { throw '-ActivationObjectName is longer than 40 characters' }
            if ((Get-AdForestInstallationId $ProductKey) -ne $iid) {
                $entry['error_code'] = '0xC004F031'
                throw "The forest's installation ID for this key changed since collection; collect again with -AdForest"
            }
            if ($PSCmdlet.ShouldProcess($aid, 'publish the Active Directory activation object')) {
                Send-AdConfirmation $ProductKey $cid $ActivationObjectName
                $entry['status'] = 'activated'
                $entry['message'] = 'Active Directory activation object published'
            } else {
                $entry['message'] = 'not deposited (-WhatIf)'
            }
            $results += $entry
            Write-AgentLog 'INFO' ('{0}: {1} {2}' -f $aid, $entry['status'], $entry['message'])
            Write-Host ('{0}: {1}' -f $aid, $entry['status'])
            if ($entry['status'] -ne 'activated') { $failed++ }
            continue
        }
        $office = $wmiClass -eq 'OfficeSoftwareProtectionProduct'
        $class = if ($office) { 'OfficeSoftwareProtectionProduct' } else { 'SoftwareLicensingProduct' }
        $service = if ($office) { 'OfficeSoftwareProtectionService' } else { 'SoftwareLicensingService' }
        $product = Get-LicensingProduct $class $aid
        if ($null -eq $product) { throw "Product $aid is not installed" }
        if ($product.OfflineInstallationId -ne $iid) {
            $entry['error_code'] = '0xC004F031'
            throw 'The installation ID changed since collection (reimage, hardware or key change); collect again'
        }
        if ([int]$product.LicenseStatus -eq 1) {
            # Licensed under the very installation ID this CID answers: depositing again
            # changes nothing (a second run of the same deposit).
            $entry['status'] = 'activated'
            $entry['license_status'] = 1
            $entry['message'] = 'already licensed; not deposited again'
        } elseif ($PSCmdlet.ShouldProcess($aid, 'deposit the confirmation ID')) {
            Send-ConfirmationId $product $service $iid $cid
            $product = Get-LicensingProduct $class $aid
            $entry['license_status'] = [int]$product.LicenseStatus
            if ([int]$product.LicenseStatus -eq 1) { $entry['status'] = 'activated' } else { $entry['message'] = 'Deposited, but the product is not licensed yet' }
        } else {
            $entry['message'] = 'not deposited (-WhatIf)'
        }
    } catch {
        if ($null -eq $entry['error_code']) { $entry['error_code'] = Get-AgentErrorCode $_.Exception }
        if ($null -eq $entry['message']) { $entry['message'] = [string]$_.Exception.Message }
    }
    if ($entry['status'] -ne 'activated') { $failed++ }
    $results += $entry
    Write-AgentLog $(if ($entry['status'] -eq 'activated') { 'INFO' } else { 'WARN' }) ('{0}: {1} {2} {3}' -f $aid, $entry['status'], $entry['error_code'], $entry['message'])
    Write-Host ('{0}: {1} {2}' -f $aid, $entry['status'], $entry['error_code'])
}
$out['results'] = $results
Write-Result $out
if ($failed -gt 0) { exit 1 }
exit 0
